"""Seeding for reproducible runs."""

from __future__ import annotations

import random

import numpy as np
import torch


def set_seed(seed: int) -> np.random.Generator:
    """Seed python, numpy and torch (and DGL); return a numpy Generator for samplers."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    try:
        import dgl

        dgl.seed(seed)
    except Exception:  # noqa: BLE001 - DGL seeding is best-effort
        pass
    return np.random.default_rng(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when torch and DGL both support it, else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            try:
                import dgl

                dgl.graph(([0], [0])).to("cuda")
                return torch.device("cuda")
            except Exception:  # noqa: BLE001 - CPU-only DGL build
                return torch.device("cpu")
        return torch.device("cpu")
    return torch.device(name)
