"""Configuration: defaults in code, YAML files and ``key=value`` overrides on top.

A resolved config is a flat ``dict``. Precedence, lowest to highest:
trainer/data defaults -> the model's ``default_config`` -> YAML files (in order) ->
``--set key=value`` overrides. Unknown keys and values of the wrong type are
:class:`GraphrecError` s that name the key and the known keys.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from graphrec.errors import GraphrecError


class _Loader(yaml.SafeLoader):
    """YAML 1.1 as PyYAML reads it, plus YAML 1.2 floats without a dot (``1e-3``, ``5E+2``).

    PyYAML reads ``learning_rate: 1e-3`` as the *string* ``'1e-3'``; configs and ``--set``
    are read with this loader so that it is the number 0.001.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def yaml_load(text: str) -> Any:
    """``yaml.safe_load`` that also reads ``1e-3`` as a float (:class:`_Loader`)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)

#: Trainer settings (spec section 2.1/2.2). Models may override any of them.
TRAIN_DEFAULTS: dict[str, Any] = {
    "seed": 2024,
    "epochs": 500,
    "train_batch_size": 2048,
    "learning_rate": 1e-3,
    # lr * a ** (epoch / b), stepped once per epoch; [1.0, 50] = constant
    "learning_rate_scheduler": [1.0, 50],
    "weight_decay": 0.0,
    "eval_step": 1,
    "stopping_step": 20,
    # early stopping may end a run only from this epoch on (0 = any time): rules out a stop on an
    # early validation peak, which CI2MG shows on the synthetic set (docs/models/ci2mg.md)
    "stopping_min_epochs": 0,
    "valid_metric": "recall@20",
    "topk": [10, 20, 50],
    "eval_batch_size": 2048,
    # items scored at once in evaluation (0 = all); top-K lists of the chunks are merged
    "eval_item_chunk": 0,
    # exclude validation items when ranking for test (false = the authors' protocol, spec 2.4)
    "eval_mask_valid_in_test": True,
    "device": "auto",
    # CPU threads of torch in 'graphrec fit' (0 = what the machine gives this process:
    # $OMP_NUM_THREADS if set, else the CPUs in its affinity mask); docs/results.md has 1- and 2-thread timings
    "threads": 0,
    # deterministic torch kernels: one seed and thread count give one result on CPU
    # (graphrec.train.seed.set_deterministic); false allows nondeterministic ones
    "deterministic": True,
    # mid-epoch resume states (graphrec.train.resume): written between batches once this many minutes
    # passed since the last one (0 = at epoch boundaries only), so an interrupted long epoch continues
    # at its next batch; resume_every_batches: also every this many batches (0 = off)
    "resume_every_minutes": 10.0,
    "resume_every_batches": 0,
    "embedding_size": 64,
}

#: Dataset and protocol settings (spec section 1).
DATA_DEFAULTS: dict[str, Any] = {
    # null = the embedded synthetic dataset (no files needed)
    "data_dir": None,
    # name of <name>.inter in data_dir; null = the only .inter file there
    "dataset": None,
    # modality names (image/text/audio/...); null = every <modality>_feat.npy found
    "modalities": None,
    # missing_items_<ratio>.npy to load; null = the only mask file present (none = no missing modality)
    "missing_ratio": None,
    # a mask file to load instead (a relative path not found from the working directory is read from data_dir)
    "mask_file": None,
    # new-item setting (spec 1.5): read <dataset>_del.inter and new_items.npy (or derive them)
    "new_items": False,
    # raw-feature imputation for missing rows: mean | zeros | nn | neigh_mean (NN-injection over
    # the co-interaction graph, how the DGMRec paper feeds its multimodal baselines; their default)
    "imputation": "mean",
    # per-modality feature normalisation before imputation: none | l2 | standardize, or a mapping
    # {modality: method} (graphrec.data.feature_norm); none = the values of the files, as the papers
    "feature_norm": "none",
    "filter_cold_users": True,
    # embedded synthetic dataset (used when data_dir is null)
    "synth_users": 800,
    "synth_items": 1000,
    "synth_modalities": ["image", "text"],
    "synth_seed": 0,
    # mean interactions per user (density = this / synth_items); lower = sparser, where modalities matter more
    "synth_interactions": 25,
    # missing-modality protocol of the synthetic set: 'even' (1/(M+1) of items per
    # number of missing modalities) or a ratio in [0, 1) for the nested sweep
    "synth_missing": "even",
    "synth_new_items": False,
}


def _positive_ints(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in v)


#: Allowed ranges of the shared keys (checked after the type): key -> (test, what is allowed).
#: Models check their own keys when they are built.
RANGES: dict[str, tuple[Any, str]] = {
    "seed": (lambda v: 0 <= v < 2**32, "an integer in [0, 2^32)"),
    "epochs": (lambda v: v >= 1, ">= 1 (at least one epoch of training)"),
    "train_batch_size": (lambda v: v >= 1, ">= 1"),
    "eval_batch_size": (lambda v: v >= 1, ">= 1"),
    "eval_step": (lambda v: v >= 1, ">= 1"),
    "stopping_step": (lambda v: v >= 0, ">= 0"),
    "stopping_min_epochs": (lambda v: v >= 0, ">= 0"),
    "eval_item_chunk": (lambda v: v >= 0, ">= 0 (0 = all items at once)"),
    "learning_rate": (lambda v: v >= 0, ">= 0"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "embedding_size": (lambda v: v >= 1, ">= 1"),
    "threads": (lambda v: v >= 0, ">= 0 (0 = the CPUs this process may use)"),
    "resume_every_minutes": (lambda v: v >= 0, ">= 0 (0 = resume states at epoch boundaries only)"),
    "resume_every_batches": (lambda v: v >= 0, ">= 0 (0 = off)"),
    "topk": (_positive_ints, "a non-empty list of positive integers, e.g. [10, 20]"),
    "synth_users": (lambda v: v >= 10, ">= 10"),
    "synth_items": (lambda v: v >= 20, ">= 20"),
    "synth_interactions": (lambda v: v >= 5, ">= 5 (every synthetic user has at least 5 items)"),
}


def check_range(key: str, value: Any, source: str) -> None:
    """One-line :class:`GraphrecError` if ``value`` is outside the allowed range of ``key`` (:data:`RANGES`)."""
    rule = RANGES.get(key)
    if rule is None or value is None:
        return
    test, allowed = rule
    if not test(value):
        raise GraphrecError(f"{source}: '{key}' must be {allowed}, got {value!r}")


def _close(key: str, known: Iterable[str]) -> str:
    m = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean '{m[0]}'?)" if m else ""


def _check_type(key: str, value: Any, default: Any, source: str) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise GraphrecError(f"{source}: '{key}' must be true or false, got {value!r}")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise GraphrecError(f"{source}: '{key}' must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GraphrecError(f"{source}: '{key}' must be a number, got {value!r}")
        return float(value)
    if isinstance(default, (list, tuple)) and not isinstance(value, (list, tuple)):
        raise GraphrecError(f"{source}: '{key}' must be a list like {list(default)!r}, got {value!r}")
    return value


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """Parse ``["key=value", ...]``; values are read as YAML (``0.1``, ``true``, ``[1, 2]``)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise GraphrecError(f"--set expects key=value, got '{item}'")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            out[key] = yaml_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key] = raw
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a non-mapping is a one-line error."""
    p = Path(path)
    if not p.is_file():
        raise GraphrecError(f"config file '{p}' does not exist")
    try:
        data = yaml_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise GraphrecError(f"config file '{p}' is not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise GraphrecError(f"config file '{p}' must hold a mapping of key: value, not {type(data).__name__}")
    return data


#: keys of the DGMRec authors' code and MMRec configs that graphrec reads under its own name
#: (docs/architecture.md, "Configs of the DGMRec authors' code and MMRec"). Values of one-element
#: lists (MMRec's hyper-parameter lists, ``seed: [999]``) are unwrapped for scalar keys.
AUTHOR_ALIASES: dict[str, str] = {
    "filter_out_cod_start_users": "filter_cold_users",
    "inter_file_name": "dataset (without .inter)",
    "gpu_id": "device (cuda:<id>)",
    "use_gpu": "device (false -> cpu, true -> auto)",
    "learner": "(Adam is the only optimiser; 'adam' is accepted)",
    "missing_imputation": "imputation (0 -> zeros, 1 -> mean, 2 -> neigh_mean, the NN-injection)",
    "n_layers / n_ui_layers": "the other name, for a model that has only one of them",
}
#: keys of the authors' code / MMRec without a graphrec counterpart: a one-line error that says what to use
AUTHOR_ERRORS: dict[str, str] = {
    "hyper_parameters": "graphrec runs one configuration per run: give each key one value (compare settings with 'graphrec bench --set', one out folder per setting)",
    "metrics": "graphrec computes recall, ndcg, precision, hit and map at every K of 'topk'; remove 'metrics'",
    "data_path": "use 'data_dir' (the folder that holds <dataset>.inter and <modality>_feat.npy)",
    "missing_modal": "graphrec applies the mask named by 'missing_ratio' or 'mask_file' ('missing_ratio: none' = no missing modality)",
    "vision_feature_file": "graphrec reads <modality>_feat.npy from data_dir (image_feat.npy); choose modalities with 'modalities'",
    "text_feature_file": "graphrec reads <modality>_feat.npy from data_dir (text_feat.npy); choose modalities with 'modalities'",
    "use_raw_features": "graphrec always reads the feature files as they are; normalise with 'feature_norm'",
    "save_model": "graphrec fit always writes model.pt into its run folder (--out)",
    "checkpoint_dir": "use 'graphrec fit --out DIR'",
}


def _author_key(key: str, value: Any, defaults: Mapping[str, Any], source: str) -> tuple[str, Any] | None:
    """graphrec's ``(key, value)`` for a key of the authors' code, ``None`` to drop it; raises for keys without one."""
    if key in AUTHOR_ERRORS:
        raise GraphrecError(f"{source}: '{key}' (a key of the authors' code / MMRec) has no graphrec counterpart: {AUTHOR_ERRORS[key]}")
    if key == "n_layers" and "n_ui_layers" in defaults:
        return "n_ui_layers", value
    if key == "n_ui_layers" and "n_layers" in defaults:
        return "n_layers", value
    if key == "filter_out_cod_start_users":
        return "filter_cold_users", value
    if key == "inter_file_name":
        return "dataset", str(value).removesuffix(".inter")
    if key == "gpu_id":
        return "device", f"cuda:{int(value)}"
    if key == "use_gpu":
        return "device", "auto" if value else "cpu"
    if key == "missing_imputation":
        modes = {0: "zeros", 1: "mean", 2: "neigh_mean"}
        if isinstance(value, list) and len(value) == 1:
            value = value[0]  # MMRec's one-element hyper-parameter list
        if isinstance(value, bool) or value not in modes:
            raise GraphrecError(f"{source}: 'missing_imputation: {value}' must be 0, 1 or 2 (zeros, mean, NN-injection); or use 'imputation'")
        return "imputation", modes[value]
    if key == "learner":
        if str(value).lower() != "adam":
            raise GraphrecError(f"{source}: 'learner: {value}': graphrec trains with Adam only")
        return None
    return key, value


def resolve_config(
    model_name: str,
    model_defaults: Mapping[str, Any],
    files: Iterable[str | Path] = (),
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge defaults, YAML files and overrides into one flat config for ``model_name``.

    A YAML file may carry ``model: NAME``; it must then match ``model_name``.
    """
    defaults: dict[str, Any] = {**TRAIN_DEFAULTS, **DATA_DEFAULTS, **model_defaults}
    config = dict(defaults)
    layers: list[tuple[str, Mapping[str, Any]]] = [(f"config file '{f}'", load_yaml(f)) for f in files]
    if overrides:
        layers.append(("--set", overrides))
    for source, layer in layers:
        for key, value in layer.items():
            if key == "model":
                if value != model_name:
                    raise GraphrecError(f"{source} is for model '{value}', not '{model_name}'")
                continue
            if key not in defaults:
                translated = _author_key(key, value, defaults, source)
                if translated is None:
                    continue
                key, value = translated
            if isinstance(value, list) and defaults.get(key) is not None and not isinstance(defaults[key], (list, tuple)):
                if len(value) != 1:
                    raise GraphrecError(
                        f"{source}: '{key}' holds several values {value!r}; graphrec runs one configuration per run "
                        "(compare values with 'graphrec bench --set', one out folder per value)"
                    )
                value = value[0]  # MMRec's one-element hyper-parameter lists
            if key not in defaults:
                raise GraphrecError(
                    f"{source}: unknown config key '{key}'{_close(key, defaults)}; "
                    f"run 'graphrec models {model_name}' to list the keys"
                )
            config[key] = _check_type(key, value, defaults[key], source)
            check_range(key, config[key], source)
    config["model"] = model_name
    return config
