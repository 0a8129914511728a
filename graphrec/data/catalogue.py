"""Items added to the catalogue after training: their feature rows (``graphrec recommend --new-items``).

A folder holds one ``<modality>_feat.npy`` per modality the model knows, each
``(n_new, d_m)`` with the model's width ``d_m``; row ``r`` of every file is the same new
item, which gets the id ``N + r`` (``N`` = items at training). A modality is **missing**
for a new item when its row is all NaN, or for every new item when its file is absent.
A row that is only partly NaN, or holds inf, is an error (a half-known feature is more
likely a bug than a missing modality). At least one file must exist, and files of
modalities the model does not know are errors (they would otherwise be ignored silently).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphrec.data.features import FEATURE_SUFFIX
from graphrec.errors import GraphrecError


@dataclass
class NewItems:
    """Feature rows of items added after training.

    Attributes:
        features: ``{m: (n, d_m) float32}`` for every model modality; missing rows are NaN.
        observed: ``(n, M)`` bool, column order = ``modalities``.
        modalities: the model's modality names.
    """

    features: dict[str, np.ndarray]
    observed: np.ndarray
    modalities: list[str]

    @property
    def n(self) -> int:
        return int(self.observed.shape[0])

    @staticmethod
    def from_arrays(features: dict[str, np.ndarray], widths: dict[str, int], origin: str = "new items") -> NewItems:
        """Check ``features`` (``{m: (n, d_m)}``, all-NaN rows = missing) against the model's ``widths``."""
        mods = list(widths)
        unknown = sorted(set(features) - set(mods))
        if unknown:
            raise GraphrecError(
                f"{origin}: modality '{unknown[0]}' is not one of the model's ({', '.join(mods) or 'none'})"
            )
        if not features:
            raise GraphrecError(f"{origin}: no feature rows; expected {', '.join(m + FEATURE_SUFFIX for m in mods)}")
        counts = {m: int(np.shape(x)[0]) if np.ndim(x) == 2 else -1 for m, x in features.items()}
        for m, x in features.items():
            x = np.asarray(x)
            if x.ndim != 2:
                raise GraphrecError(f"{origin}: {m} features must be 2-D (new items x {widths[m]}), got shape {x.shape}")
            if x.shape[1] != widths[m]:
                raise GraphrecError(f"{origin}: {m} features have {x.shape[1]} columns but the model's {m} width is {widths[m]}")
            if not np.issubdtype(x.dtype, np.number):
                raise GraphrecError(f"{origin}: {m} features must be numeric, got dtype {x.dtype}")
        n = next(iter(counts.values()))
        if len(set(counts.values())) > 1:
            listing = ", ".join(f"{m} {c}" for m, c in counts.items())
            raise GraphrecError(f"{origin}: the feature files disagree on the number of new items ({listing})")
        if n == 0:
            raise GraphrecError(f"{origin}: the feature files have no rows")
        out: dict[str, np.ndarray] = {}
        observed = np.zeros((n, len(mods)), dtype=bool)
        for j, m in enumerate(mods):
            if m not in features:
                out[m] = np.full((n, widths[m]), np.nan, dtype=np.float32)
                continue
            x = np.asarray(features[m], dtype=np.float32)
            nan = np.isnan(x)
            full_nan = nan.all(axis=1)
            bad = (nan.any(axis=1) & ~full_nan) | np.isinf(x).any(axis=1)
            if bad.any():
                r = int(np.flatnonzero(bad)[0])
                raise GraphrecError(
                    f"{origin}: {m} row {r} holds NaN or inf in some columns; a missing modality is a row of all NaN"
                )
            out[m] = np.ascontiguousarray(x)
            observed[:, j] = ~full_nan
        return NewItems(out, observed, mods)


def load_new_items(folder: str | Path, widths: dict[str, int]) -> NewItems:
    """Read ``<m>_feat.npy`` files of new items from ``folder`` (see the module docstring)."""
    d = Path(folder)
    if not d.is_dir():
        raise GraphrecError(f"new-items folder '{d}' does not exist")
    feats: dict[str, np.ndarray] = {}
    for p in sorted(d.glob(f"*{FEATURE_SUFFIX}")):
        m = p.name[: -len(FEATURE_SUFFIX)]
        if m not in widths:
            raise GraphrecError(f"{p}: modality '{m}' is not one of the model's ({', '.join(widths) or 'none'})")
        try:
            arr = np.load(p, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001
            raise GraphrecError(f"{p}: cannot be read as a .npy array ({type(exc).__name__})") from None
        feats[m] = arr
    if not feats:
        raise GraphrecError(f"'{d}' holds no feature file; expected {', '.join(m + FEATURE_SUFFIX for m in widths)}")
    return NewItems.from_arrays(feats, widths, origin=str(d))
