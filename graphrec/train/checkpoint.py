"""Saving and loading trained models.

A checkpoint is a dict written with ``torch.save``::

    {"format": 1, "graphrec_version": ..., "model": "dgmrec", "config": {...resolved...},
     "state_dict": {...}, "metrics": {...}, "dataset": {...summary...},
     "blocks": {"item_graph_block": "attention_item_conv", ...},   # the model's block slots
     "plugins": ["examples.attention_block"],                       # modules to import first
     "registry": {"model": {...}, "blocks": {...}}}                 # name, module, distribution

The config holds everything needed to load the same dataset again, so
``graphrec evaluate CHECKPOINT`` rebuilds the model from the registry. ``plugins`` lists the
non-built-in modules that registered the model or one of its slot blocks; loading imports
those whose names are not registered yet (the current directory is importable), and says
which plugin is missing otherwise.
"""

from __future__ import annotations

import importlib
import io
from pathlib import Path
from typing import Any

import torch

import graphrec
from graphrec.config import DATA_DEFAULTS, TRAIN_DEFAULTS, resolve_config
from graphrec.data.dataset import RecDataset, load_dataset
from graphrec.data.interactions import atomic_write_bytes
from graphrec.errors import GraphrecError
from graphrec.models.base import RecModel
from graphrec.registry import BLOCKS, MODELS, ensure_cwd_importable, load_builtin

FORMAT = 1


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
    payload = {
        "format": FORMAT,
        "graphrec_version": graphrec.__version__,
        "model": config["model"],
        "config": dict(config),
        "state_dict": {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in model.state_dict().items()},
        **registry_record(model, config),
        **(extra or {}),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        p = p / "model.pt"
    if not p.is_file():
        raise GraphrecError(f"checkpoint '{p}' does not exist (pass the model.pt a 'graphrec fit' run wrote, or its folder)")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise GraphrecError(f"{p}: not a graphrec checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "model" not in payload:
        raise GraphrecError(f"{p}: not a graphrec checkpoint (format {FORMAT} expected)")
    return payload


def _register_recorded_object(registry, entry: dict[str, Any]) -> None:
    """Entry points of the ``module:Class`` form register an undecorated class: do the same."""
    mod, _, qualname = (entry.get("object") or "").partition(":")
    try:
        obj = importlib.import_module(mod)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception:  # noqa: BLE001  (reported by the caller as "did not register")
        return
    if isinstance(obj, type):
        registry.register(entry["name"], origin=entry.get("module"))(obj)


def require_plugins(payload: dict[str, Any]) -> None:
    """Import the plugin modules a checkpoint recorded for names that are not registered yet.

    A module that cannot be imported, or that does not register the recorded name, is a one-line
    :class:`GraphrecError` naming the module and the model/block that needs it.
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
    imported: dict[str, str | None] = {}
    for kind, registry, entry in needs:
        name, module = entry.get("name"), entry.get("module")
        if registry is not None and name in registry:
            continue
        what = f"{kind} '{name}'" if name else "recorded when it was saved"
        if not module or module == "__main__":
            raise GraphrecError(f"checkpoint needs {what}, which is not registered; import the code that registers it first")
        if module not in imported:
            ensure_cwd_importable()
            try:
                importlib.import_module(module)
                imported[module] = None
            except Exception as exc:  # noqa: BLE001
                imported[module] = f"{type(exc).__name__}: {exc}"
        dist = entry.get("distribution")
        hint = f"install distribution '{dist}', " if dist else ""
        if imported[module] is not None:
            raise GraphrecError(
                f"checkpoint needs plugin module '{module}' ({what}); {hint}make it importable or pass --plugin "
                f"({imported[module]})"
            )
        if registry is not None and name not in registry:
            _register_recorded_object(registry, entry)
        if registry is not None and name not in registry:
            raise GraphrecError(f"checkpoint needs plugin module '{module}' ({what}), but importing it did not register '{name}'")


def load_model(path: str | Path, dataset: RecDataset | None = None, overrides: dict[str, Any] | None = None) -> tuple[RecModel, RecDataset, dict]:
    """Rebuild the model of a checkpoint (and its dataset, unless given) and load its weights.

    Plugin modules recorded in the checkpoint are imported first (:func:`require_plugins`).
    Config keys the checkpoint lacks (added to the model later) take the model's defaults.
    """
    load_builtin()
    payload = read_checkpoint(path)
    require_plugins(payload)
    cls = MODELS.get(payload["model"])
    # keys added to the model after the checkpoint was written take their defaults (which keep
    # the earlier behaviour); the checkpoint's own values and then the overrides win
    model_defaults = getattr(cls, "default_config", {})
    checked = {}
    if overrides:  # unknown keys, wrong types and out-of-range values are one-line errors
        resolved = resolve_config(payload["model"], model_defaults, overrides=overrides)
        checked = {k: resolved[k] for k in overrides}
    config = {**TRAIN_DEFAULTS, **DATA_DEFAULTS, **model_defaults, **payload["config"], **checked}
    ds = dataset if dataset is not None else load_dataset(config)
    model = cls(ds, config)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise GraphrecError(f"{path}: weights do not fit model '{payload['model']}' on this dataset ({first})") from None
    return model, ds, payload
