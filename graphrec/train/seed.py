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


def resolve_threads(value: int = 0) -> int:
    """CPU threads for torch: ``value`` if > 0, else ``$OMP_NUM_THREADS`` if set, else the CPUs this
    process may run on (its affinity mask, e.g. ``taskset``; ``os.cpu_count()`` where unknown)."""
    if int(value) > 0:
        return int(value)
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - platforms without affinity masks
        return max(1, os.cpu_count() or 1)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the GPU when torch sees one (``cuda``), else the CPU; other names are checked.

    DGL need not support the device: the heterograph stays on the CPU and message passing runs
    on the model's device with tensors derived from it (:mod:`graphrec.graph.spmm`).
    Raises :class:`GraphrecError` for an unknown device name or a GPU torch cannot see.
    """
    from graphrec.errors import GraphrecError

    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise GraphrecError(f"unknown device '{name}': use auto, cpu, cuda or cuda:<index>") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GraphrecError(f"device '{name}' requested but torch sees no CUDA GPU (torch.cuda.is_available() is False)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise GraphrecError(f"device '{name}' requested but torch sees {torch.cuda.device_count()} GPU(s)")
    elif device.type != "cpu":
        raise GraphrecError(f"device '{name}' is not supported: use auto, cpu, cuda or cuda:<index>")
    return device
