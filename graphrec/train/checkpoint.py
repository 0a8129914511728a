"""Saving and loading trained models.

A checkpoint is a dict written with ``torch.save``::

    {"format": 1, "graphrec_version": ..., "model": "dgmrec", "config": {...resolved...},
     "state_dict": {...}, "metrics": {...}, "dataset": {...summary...},
     "data_fingerprint": {"users", "items", "train_rows", "train_sha256", "modalities"},
     "blocks": {"item_graph_block": "attention_item_conv", ...},   # the model's block slots
     "plugins": ["examples.attention_block"],                       # modules that registered them
     "registry": {"model": {...}, "blocks": {...}}}                 # name, module, distribution

Everything in it is plain data: tensors, dicts, lists, tuples, strings, numbers, booleans and
``None``, so it loads with ``torch.load(weights_only=True)`` and loading never runs code.
:func:`to_plain` stores numpy arrays as tagged tensors (``{"__ndarray__": tensor, "dtype": ...}``),
numpy scalars as Python numbers, sets and bytes tagged too; :func:`from_plain` turns the tags back,
so whatever goes through ``save_checkpoint(..., extra=...)`` comes back from :func:`read_checkpoint`.
A checkpoint written by graphrec 0.x before this (pickled numpy inside) is refused with a line
saying how to convert it; ``trust=True`` (``--trust-checkpoint``) loads it the old way.

The config holds everything needed to load the same dataset again, so
``graphrec evaluate CHECKPOINT`` rebuilds the model from the registry; the data fingerprint
makes evaluating on other data an error. ``plugins`` lists the non-built-in modules that
registered the model or one of its slot blocks; loading never imports them: it names the
``--plugin`` to pass when a name is not registered.
"""

from __future__ import annotations

import io
import pickle
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

import graphrec
from graphrec.config import DATA_DEFAULTS, TRAIN_DEFAULTS, resolve_config
from graphrec.data.dataset import RecDataset, load_dataset
from graphrec.data.interactions import atomic_write_bytes
from graphrec.errors import GraphrecError
from graphrec.models.base import RecModel, graphs_from_state
from graphrec.registry import BLOCKS, MODELS, load_builtin
from graphrec.train.seed import resolve_device

FORMAT = 1

#: config keys ``graphrec evaluate --set`` may change: how to evaluate, and where the same data lies
EVAL_KEYS = ("topk", "eval_batch_size", "eval_item_chunk", "eval_mask_valid_in_test", "device",
             "data_dir", "dataset", "missing_ratio", "mask_file")

#: numpy dtypes stored as a tensor of the same dtype; any other (fixed-size) dtype is stored as bytes
_TORCH_DTYPES = {np.dtype(t) for t in (np.bool_, np.uint8, np.int8, np.int16, np.int32, np.int64,
                                       np.float16, np.float32, np.float64, np.complex64, np.complex128)}


def to_plain(obj: Any, where: str = "checkpoint") -> Any:
    """``obj`` as data that ``torch.load(weights_only=True)`` reads back (see :func:`from_plain`).

    Tensors (detached, on the CPU), ``None``, bools, ints, floats and strings stay; dicts
    (``OrderedDict`` kept), lists and tuples are converted item by item; numpy scalars become
    Python numbers, ``Path`` a string; numpy arrays, sets and bytes become tagged dicts. Anything
    else is a ``TypeError`` naming where it is.
    """
    if isinstance(obj, np.generic):  # first: np.float64 and np.str_ are also float and str
        return obj.item() if not isinstance(obj, (np.void, np.object_)) else to_plain(np.asarray(obj), where)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            return {"__ndarray__": [to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj.ravel().tolist())],
                    "dtype": "object", "shape": list(obj.shape)}
        a = obj.copy(order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
        if a.dtype in _TORCH_DTYPES and a.dtype.isnative:
            return {"__ndarray__": torch.from_numpy(a), "dtype": a.dtype.str, "shape": list(a.shape)}
        return {"__ndarray__": torch.from_numpy(np.frombuffer(a.tobytes(), dtype=np.uint8).copy()),
                "dtype": np.lib.format.dtype_to_descr(a.dtype), "shape": list(a.shape), "raw": True}
    if isinstance(obj, dict):
        out = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            out[to_plain(k, where)] = to_plain(v, f"{where}[{k!r}]")
        if hasattr(obj, "_metadata"):  # a module state_dict's version info
            out._metadata = obj._metadata  # type: ignore[attr-defined]
        return out
    if isinstance(obj, (list, tuple)):
        items = [to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, (set, frozenset)):
        return {"__set__": [to_plain(v, where) for v in sorted(obj, key=repr)]}
    if isinstance(obj, (bytes, bytearray)):
        return {"__bytes__": torch.frombuffer(bytearray(obj), dtype=torch.uint8) if obj else torch.zeros(0, dtype=torch.uint8)}
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{where}: a {type(obj).__module__}.{type(obj).__qualname__} cannot be stored in a checkpoint; "
                    "convert it to tensors, numpy arrays, dicts, lists, numbers or strings")


def from_plain(obj: Any) -> Any:
    """Undo :func:`to_plain`'s tags: numpy arrays, sets and bytes come back (the rest is unchanged)."""
    if isinstance(obj, dict):
        if "__ndarray__" in obj and "dtype" in obj:
            data, shape = obj["__ndarray__"], tuple(int(s) for s in obj.get("shape", ()))
            if obj["dtype"] == "object":
                arr = np.empty(len(data), dtype=object)
                arr[:] = [from_plain(v) for v in data]
                return arr.reshape(shape)
            if obj.get("raw"):
                dtype = np.lib.format.descr_to_dtype(obj["dtype"])
                return np.frombuffer(data.numpy().tobytes(), dtype=dtype).reshape(shape).copy()
            return data.numpy().astype(np.dtype(obj["dtype"]), copy=True).reshape(shape)
        if set(obj) == {"__set__"}:
            return {from_plain(v) for v in obj["__set__"]}
        if set(obj) == {"__bytes__"}:
            return obj["__bytes__"].numpy().tobytes()
        out = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            out[k] = from_plain(v)
        if hasattr(obj, "_metadata"):
            out._metadata = obj._metadata  # type: ignore[attr-defined]
        return out
    if isinstance(obj, list):
        return [from_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(from_plain(v) for v in obj)
    return obj


_EVAL_HINT = "evaluate on the training data (its data_dir and dataset are in the checkpoint's config)"


def check_fingerprint(recorded: dict[str, Any] | None, dataset: RecDataset, path: str | Path, hint: str = _EVAL_HINT) -> None:
    """One-line :class:`GraphrecError` when ``dataset`` is not the data the checkpoint was trained on.

    ``hint`` ends the message (what to do); ``graphrec fit --resume`` passes its own.
    """
    if not recorded:
        return  # written before fingerprints existed
    now = dataset.fingerprint()
    for key, what in (("users", "users"), ("items", "items"), ("modalities", "modalities (dims)"),
                      ("train_rows", "train rows"), ("train_sha256", "train rows (hash)")):
        if recorded.get(key) != now.get(key):
            raise GraphrecError(
                f"{path}: the data does not match the data this model was trained on ({what}: {now.get(key)} here, "
                f"{recorded.get(key)} in training); {hint}"
            )


def check_eval_overrides(overrides: dict[str, Any], model_cls: type | None = None) -> None:
    """``evaluate --set`` may change only :data:`EVAL_KEYS` and the model's own scoring keys
    (``eval_keys`` of its class, e.g. ``dgmrec_cold``'s ``cold_scoring``); training keys are the checkpoint's."""
    allowed = (*EVAL_KEYS, *getattr(model_cls, "eval_keys", ()))
    bad = [k for k in overrides if k not in allowed]
    if bad:
        raise GraphrecError(
            f"--set {', '.join(bad)}: cannot change at evaluation (the model was trained with the checkpoint's values); "
            f"evaluate may set {', '.join(allowed)}"
        )


def _entry(registry, name: str) -> dict[str, Any]:
    obj = registry.get(name) if name in registry else None
    return {"name": name, "module": registry.origin(name), "distribution": registry.distribution(name),
            "builtin": registry.is_builtin(name),
            "object": f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', '?')}"}


def registry_record(model: RecModel, config: dict[str, Any]) -> dict[str, Any]:
    """``{"blocks", "plugins", "registry"}``: the registry names a checkpoint needs and their modules."""
    blocks = {key: config[key] for key in getattr(model, "block_slots", {}) if key in config}
    record = {"model": _entry(MODELS, config["model"]),
              "blocks": {key: _entry(BLOCKS, name) for key, name in blocks.items() if name in BLOCKS}}
    entries = [record["model"], *record["blocks"].values()]
    plugins = list(dict.fromkeys(e["module"] for e in entries if not e["builtin"] and e["module"]))
    return {"blocks": blocks, "plugins": plugins, "registry": record}


def save_checkpoint(path: str | Path, model: RecModel, config: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """Write ``model`` (weights, extra state), ``config`` and ``extra`` as plain data (:func:`to_plain`), atomically.

    The model's data fingerprint (:meth:`RecDataset.fingerprint`, taken when it was built) is recorded.
    """
    payload = {
        "format": FORMAT,
        "graphrec_version": graphrec.__version__,
        "model": config["model"],
        "config": dict(config),
        "state_dict": model.state_dict(),
        **registry_record(model, config),
        **({"data_fingerprint": model.data_fingerprint} if getattr(model, "data_fingerprint", None) else {}),
        **(extra or {}),
    }
    buf = io.BytesIO()
    torch.save(to_plain(payload), buf)
    atomic_write_bytes(path, buf.getvalue())


def convert_hint(p: Path) -> str:
    return (f"if you trust its origin (e.g. a checkpoint of an earlier graphrec), pass --trust-checkpoint, "
            f"or re-save it once as plain data with 'graphrec checkpoint convert {p}'")


def read_checkpoint(path: str | Path, trust: bool = False) -> dict[str, Any]:
    """Load a checkpoint's payload with ``torch.load(weights_only=True)`` (no code runs) and :func:`from_plain`.

    ``trust=True`` allows a full unpickle (a checkpoint of an earlier graphrec with numpy
    objects inside); only for files from a trusted source.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "model.pt"
    if not p.is_file():
        raise GraphrecError(f"checkpoint '{p}' does not exist (pass the model.pt a 'graphrec fit' run wrote, or its folder)")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text and zipfile.is_zipfile(p):  # a torch.save file with objects inside
            detail = text.rpartition("WeightsUnpickler error:")[2].strip().splitlines()[0] if "WeightsUnpickler error:" in text else ""
            raise GraphrecError(
                f"{p}: refused: it holds pickled Python objects, not plain data ({detail or 'unsupported object'}), and loading them "
                f"could run code; {convert_hint(p)}"
            ) from None
        raise GraphrecError(f"{p}: not a graphrec checkpoint (UnpicklingError)") from None
    except Exception as exc:  # noqa: BLE001
        raise GraphrecError(f"{p}: not a graphrec checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "model" not in payload:
        raise GraphrecError(f"{p}: not a graphrec checkpoint (format {FORMAT} expected)")
    return from_plain(payload)


def _register_recorded_object(registry, entry: dict[str, Any]) -> None:
    """Entry points of the ``module:Class`` form register an undecorated class: do the same, if the
    user's ``--plugin`` already imported its module (nothing is imported here)."""
    mod, _, qualname = (entry.get("object") or "").partition(":")
    obj = sys.modules.get(mod)
    if obj is None:
        return
    try:
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except AttributeError:  # reported by the caller as "did not register"
        return
    if isinstance(obj, type):
        registry.register(entry["name"], origin=entry.get("module"))(obj)


def require_plugins(payload: dict[str, Any]) -> None:
    """Check that the model and slot blocks a checkpoint names are registered; never imports anything.

    A name that is not registered is a one-line :class:`GraphrecError` naming the plugin
    module to pass with ``--plugin`` (and the distribution to install, if it came from one).
    """
    record = payload.get("registry") or {}
    needs: list[tuple[str, Any, dict[str, Any]]] = []
    if record.get("model"):
        needs.append(("model", MODELS, record["model"]))
    needs += [("block", BLOCKS, e) for e in (record.get("blocks") or {}).values()]
    # older or hand-made payloads: "plugins" without a registry record
    for module in payload.get("plugins") or []:
        if not any(e.get("module") == module for _, _, e in needs):
            needs.append(("plugin", None, {"name": None, "module": module, "distribution": None}))
    for kind, registry, entry in needs:
        name, module = entry.get("name"), entry.get("module")
        if registry is not None and name in registry:
            continue
        if registry is not None and module in sys.modules:
            _register_recorded_object(registry, entry)
            if name in registry:
                continue
        if registry is None and module in sys.modules:
            continue
        what = f"{kind} '{name}'" if name else "a plugin recorded when it was saved"
        if not module or module == "__main__":
            raise GraphrecError(f"checkpoint needs {what}, which is not registered; import the code that registers it first")
        dist = entry.get("distribution")
        hint = f"install distribution '{dist}' or " if dist else ""
        if module in sys.modules:
            raise GraphrecError(f"checkpoint needs plugin module '{module}' ({what}), but importing it did not register '{name}'")
        raise GraphrecError(
            f"checkpoint needs plugin module '{module}' ({what}); {hint}pass --plugin {module} "
            "(plugins named in a checkpoint are never imported by themselves)"
        )


def with_defaults(cls, saved: dict[str, Any]) -> dict[str, Any]:
    """``saved`` (the config a checkpoint or resume state holds) with the keys it lacks filled from the
    trainer, data and ``cls`` model defaults: keys added to a model after the file was written take
    their defaults, which keep the earlier behaviour; the file's own values win."""
    return {**TRAIN_DEFAULTS, **DATA_DEFAULTS, **getattr(cls, "default_config", {}), **saved}


def load_model(path: str | Path, dataset: RecDataset | None = None, overrides: dict[str, Any] | None = None,
               trust: bool = False, eval_only: bool = True) -> tuple[RecModel, RecDataset, dict]:
    """Rebuild the model of a checkpoint (and its dataset, unless given) and load its weights.

    The model and blocks it names must be registered (:func:`require_plugins`; pass their
    ``--plugin``); the data must match the training data's fingerprint (:func:`check_fingerprint`).
    Config keys the checkpoint lacks (added to the model later) take the model's defaults.
    With ``eval_only`` (the CLI's case) ``overrides`` may set only evaluation keys
    (:func:`check_eval_overrides`); the Python API may pass ``eval_only=False``. The model is
    moved to the config's ``device`` (``auto``: the GPU when torch sees one). ``trust``: see
    :func:`read_checkpoint`.
    """
    load_builtin()
    payload = read_checkpoint(path, trust=trust)
    require_plugins(payload)
    cls = MODELS.get(payload["model"])
    # keys added to the model after the checkpoint was written take their defaults (which keep
    # the earlier behaviour); the checkpoint's own values and then the overrides win
    model_defaults = getattr(cls, "default_config", {})
    checked = {}
    if overrides:  # unknown keys, wrong types and out-of-range values are one-line errors
        if eval_only:
            check_eval_overrides(overrides, cls)
        resolved = resolve_config(payload["model"], model_defaults, overrides=overrides)
        checked = {k: resolved[k] for k in overrides}
    config = {**with_defaults(cls, payload["config"]), **checked}
    ds = dataset if dataset is not None else load_dataset(config)
    check_fingerprint(payload.get("data_fingerprint"), ds, path)
    with graphs_from_state():  # the checkpoint holds the model's graphs: no kNN search to build them first
        model = cls(ds, config)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise GraphrecError(f"{path}: weights do not fit model '{payload['model']}' on this dataset ({first})") from None
    model.check_graphs_loaded()
    model.to_device(resolve_device(str(config.get("device", "auto"))))
    return model, ds, payload
