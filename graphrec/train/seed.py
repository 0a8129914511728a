"""Seeding for reproducible runs."""

from __future__ import annotations

import os
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


def set_deterministic(enabled: bool) -> None:
    """Make torch pick deterministic kernels (``torch.use_deterministic_algorithms``).

    On CPU with more than one thread, the backward of advanced indexing (``x[idx]`` with
    repeated ``idx``, in every BPR loss) accumulates in a varying order; CI2MG amplifies such
    rounding noise, so two runs with one seed could end far apart. With this on, one seed and
    one thread count give one result on CPU. Ops without a deterministic kernel warn instead
    of failing (``warn_only``). On CUDA, cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG``, set here
    if unset; DGL's own GPU kernels may still accumulate atomically.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(bool(enabled), warn_only=True)


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
