"""Saving and loading trained models.

A checkpoint is a dict written with ``torch.save``::

    {"format": 1, "graphrec_version": ..., "model": "dgmrec", "config": {...resolved...},
     "state_dict": {...}, "metrics": {...}, "dataset": {...summary...}}

The config holds everything needed to load the same dataset again, so
``graphrec evaluate CHECKPOINT`` rebuilds the model from the registry.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

import graphrec
from graphrec.data.dataset import RecDataset, load_dataset
from graphrec.data.interactions import atomic_write_bytes
from graphrec.errors import GraphrecError
from graphrec.models.base import RecModel
from graphrec.registry import MODELS, load_builtin

FORMAT = 1


def save_checkpoint(path: str | Path, model: RecModel, config: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    payload = {
        "format": FORMAT,
        "graphrec_version": graphrec.__version__,
        "model": config["model"],
        "config": dict(config),
        "state_dict": {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in model.state_dict().items()},
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


def load_model(path: str | Path, dataset: RecDataset | None = None, overrides: dict[str, Any] | None = None) -> tuple[RecModel, RecDataset, dict]:
    """Rebuild the model of a checkpoint (and its dataset, unless given) and load its weights."""
    load_builtin()
    payload = read_checkpoint(path)
    config = {**payload["config"], **(overrides or {})}
    cls = MODELS.get(payload["model"])
    ds = dataset if dataset is not None else load_dataset(config)
    model = cls(ds, config)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise GraphrecError(f"{path}: weights do not fit model '{payload['model']}' on this dataset ({first})") from None
    return model, ds, payload
