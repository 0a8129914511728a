"""Per-modality feature normalisation and checks of feature tables as they come (``feature_norm``).

Real feature tables arrive unnormalised (VGGish audio with values in the hundreds, 4,096-d CNN
activations). ``feature_norm`` is one method for every modality or a mapping per modality:

=============== ==========================================================================
``none``        the file's values (default: what the papers' code feeds its models)
``l2``          each item's row divided by its L2 norm (rows of norm 0 stay 0)
``standardize`` each column minus its mean, divided by its standard deviation (columns of
                std 0 become 0); statistics over the observed rows only
=============== ==========================================================================

Statistics use the rows that are present (not masked missing) and, in the new-item setting,
old items only; missing rows are normalised the same way afterwards and then replaced by
imputation. :func:`feature_checks` warns when a modality is nearly constant in direction
(mean pairwise cosine of a sample of observed rows above :data:`COSINE_WARN`) or has extreme
scale (median row norm above :data:`NORM_HIGH` or below :data:`NORM_LOW`).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from graphrec.errors import GraphrecError

FEATURE_NORMS = ("none", "l2", "standardize")
COSINE_WARN = 0.95
NORM_HIGH = 1e3
NORM_LOW = 1e-3
CHECK_SAMPLE = 1000


def norm_methods(spec: Any, modalities: list[str]) -> dict[str, str]:
    """``{modality: method}`` from a ``feature_norm`` value (one name, or a mapping per modality)."""
    if spec is None:
        spec = "none"
    if isinstance(spec, str):
        methods = {m: spec for m in modalities}
    elif isinstance(spec, Mapping):
        unknown = sorted(set(map(str, spec)) - set(modalities))
        if unknown:
            raise GraphrecError(f"feature_norm names modality {', '.join(unknown)}, not among {', '.join(modalities) or 'none'}")
        methods = {m: str(spec.get(m, "none")) for m in modalities}
    else:
        raise GraphrecError(f"feature_norm must be one of {', '.join(FEATURE_NORMS)} or a mapping modality: method, got {spec!r}")
    for m, v in methods.items():
        if v not in FEATURE_NORMS:
            raise GraphrecError(f"feature_norm for '{m}' must be one of {', '.join(FEATURE_NORMS)}, got '{v}'")
    return methods


def normalize(x: np.ndarray, method: str, observed: np.ndarray) -> np.ndarray:
    """``(N, d)`` table normalised by ``method`` with statistics over the ``observed`` (N,) rows; a new array."""
    if method == "none":
        return x
    x = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if method == "l2":
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        out = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
    else:
        ref = x[observed] if observed.any() else x
        mean, std = ref.mean(axis=0), ref.std(axis=0)
        out = np.divide(x - mean, std, out=np.zeros_like(x), where=std > 0)
    return out.astype(np.float32)


def feature_checks(name: str, x: np.ndarray, observed: np.ndarray, seed: int = 0) -> list[str]:
    """Warnings about modality ``name``'s observed rows: nearly constant direction, extreme scale."""
    rows = np.flatnonzero(observed)
    if len(rows) < 2:
        return []
    if len(rows) > CHECK_SAMPLE:
        rows = np.sort(np.random.default_rng(seed).choice(rows, CHECK_SAMPLE, replace=False))
    s = np.nan_to_num(np.asarray(x[rows], dtype=np.float64))
    norms = np.linalg.norm(s, axis=1)
    out = []
    unit = s[norms > 0] / norms[norms > 0, None]
    if len(unit) >= 2:
        total = unit.sum(axis=0)
        k = len(unit)
        mean_cos = (float(total @ total) - k) / (k * (k - 1))  # mean over pairs i != j
        if mean_cos > COSINE_WARN:
            out.append(
                f"modality '{name}': rows are nearly parallel (mean pairwise cosine {mean_cos:.2f} > {COSINE_WARN}); "
                "models that compare items by cosine see almost no difference; try --set feature_norm=standardize"
            )
    med = float(np.median(norms))
    if med > NORM_HIGH or 0 < med < NORM_LOW:
        out.append(
            f"modality '{name}': median row norm {med:.3g} (values from {s.min():.3g} to {s.max():.3g}); "
            "extreme scale; try --set feature_norm=l2 or standardize"
        )
    return out


def normalize_features(
    features: Mapping[str, np.ndarray], missing: Mapping[str, np.ndarray], spec: Any, reference: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Normalise every modality as ``spec`` says; returns (new tables, warnings on the raw tables).

    Args:
        features: ``{m: (N, d_m)}`` tables as read; missing: ``{m: (N,) bool}`` rows missing;
        reference: ``(N,)`` bool, rows allowed as sources of statistics (default all).
    """
    methods = norm_methods(spec, list(features))
    out, notes = {}, []
    for m, x in features.items():
        observed = ~np.asarray(missing[m], dtype=bool)
        if reference is not None:
            observed &= np.asarray(reference, dtype=bool)
        if methods[m] == "none":
            notes.extend(feature_checks(m, x, observed))
        out[m] = normalize(x, methods[m], observed)
    return out, notes
