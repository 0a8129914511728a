"""Building a registered model reproducibly."""

from __future__ import annotations

from typing import Any

from graphrec.data.dataset import RecDataset
from graphrec.models.base import RecModel
from graphrec.registry import MODELS, load_builtin
from graphrec.train.seed import set_seed


def build_model(dataset: RecDataset, config: dict[str, Any]) -> RecModel:
    """Seed everything with ``config['seed']`` (spec 2.2: before the model exists, so its
    initial weights are reproducible) and build the model named ``config['model']``."""
    load_builtin()
    cls = MODELS.get(config["model"])
    set_seed(int(config.get("seed", 2024)))
    return cls(dataset, config)
