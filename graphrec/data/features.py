"""Per-modality raw item features: ``<modality>_feat.npy`` files (N x d_m floats)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from graphrec.errors import GraphrecError

FEATURE_SUFFIX = "_feat.npy"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_modality_names(names: list[str], source: str) -> list[str]:
    """Modality names become file names (``<m>_feat.npy``) and graph relations (``knn_<m>``):
    letters, digits, ``_``, ``.`` and ``-``, starting with a letter or digit, no duplicates.
    Returns ``names``."""
    for m in names:
        if not isinstance(m, str) or not _NAME.fullmatch(m):
            raise GraphrecError(f"{source}: modality name {m!r} must be letters, digits, _ . - and start with a letter or digit (e.g. image, text, audio)")
    dup = sorted({m for m in names if names.count(m) > 1})
    if dup:
        raise GraphrecError(f"{source}: modality {dup[0]!r} is listed more than once")
    return names


def discover_modalities(data_dir: str | Path) -> list[str]:
    """Modality names of every ``<modality>_feat.npy`` in ``data_dir`` (sorted; generated files excluded).

    A file name without a valid modality name before ``_feat.npy`` (e.g. ``_feat.npy``) is an error.
    """
    names = []
    for p in sorted(Path(data_dir).glob(f"*{FEATURE_SUFFIX}")):
        name = p.name[: -len(FEATURE_SUFFIX)]
        if name.endswith("_generated"):
            continue
        if not name:
            raise GraphrecError(f"'{p}': a feature file needs a modality name before {FEATURE_SUFFIX}, e.g. image{FEATURE_SUFFIX}; rename or remove it")
        check_modality_names([name], f"'{p}'")
        names.append(name)
    return names


def load_features(path: str | Path, n_items: int, allow_nonfinite_rows: np.ndarray | None = None) -> np.ndarray:
    """Load one feature table as ``(n_items, d_m)`` float32, validating shape and values.

    Rows of items listed in ``allow_nonfinite_rows`` (bool mask of missing items) may hold
    NaN/inf: they are replaced by imputation anyway. Anywhere else NaN/inf is an error.
    """
    p = Path(path)
    if not p.is_file():
        raise GraphrecError(f"feature file '{p}' does not exist")
    with open(p, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise GraphrecError(f"{p}: is not a .npy file (no .npy header); write features with numpy.save(path, array)")
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        raise GraphrecError(f"{p}: cannot be read as a .npy array ({type(exc).__name__}: {exc})") from None
    if arr.ndim != 2:
        raise GraphrecError(f"{p}: expected a 2-D array (items x dims), got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise GraphrecError(f"{p}: has 0 feature columns (shape {arr.shape}); write at least one dimension per item or remove the file")
    if not np.issubdtype(arr.dtype, np.number):
        raise GraphrecError(f"{p}: expected numeric features, got dtype {arr.dtype}")
    if arr.shape[0] != n_items:
        raise GraphrecError(
            f"{p}: has {arr.shape[0]} rows but the interaction file has {n_items} items (max itemID + 1); "
            "row i must hold item i's features"
        )
    arr = arr.astype(np.float32, copy=False)
    bad = ~np.isfinite(arr).all(axis=1)
    if allow_nonfinite_rows is not None:
        bad &= ~allow_nonfinite_rows
    if bad.any():
        rows = np.flatnonzero(bad)
        raise GraphrecError(
            f"{p}: {len(rows)} row(s) hold NaN or inf (first: item {rows[0]}); "
            "fix the file or list those items as missing in the mask"
        )
    return np.ascontiguousarray(arr)
