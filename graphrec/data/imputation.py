"""Imputation of missing raw features (spec 1.4).

* ``mean`` (default, used by both papers): every missing row of modality m becomes the
  mean of the rows that are observed (and, in the new-item setting, of old items).
* ``zeros``: missing rows become 0.
* ``nn``: nearest-neighbour mean, the NN-injection baseline: a missing row becomes the
  mean of modality m over the ``k`` items most cosine-similar to the item in the
  modalities it does have (among items that observe m); items with no observed
  modality fall back to the mean.
* ``neigh_mean``: NN-injection (Malitesta et al., CIKM 2024), the way the DGMRec paper and its
  authors' code (``missing_imputation: 2``) feed the multimodal baselines: a missing row becomes
  the unweighted mean of modality m over the item's neighbours in the train co-interaction graph
  (items sharing at least one train user with it) that observe m; an item with no such
  neighbour (e.g. a new item) keeps the mean.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from graphrec.data.masks import MissingModalities
from graphrec.errors import GraphrecError

IMPUTATION_METHODS = ("mean", "zeros", "nn", "neigh_mean")


def impute(
    features: dict[str, np.ndarray],
    missing: MissingModalities,
    method: str = "mean",
    reference: np.ndarray | None = None,
    nn_k: int = 5,
    chunk_size: int = 2048,
    train: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Return new feature tables with missing rows filled; inputs are not modified.

    Args:
        features: ``{m: (N, d_m)}`` raw tables.
        missing: which rows are missing.
        method: ``mean`` | ``zeros`` | ``nn`` | ``neigh_mean``.
        reference: ``(N,)`` bool, items allowed as sources of statistics (old items in the
            new-item setting); default all.
        nn_k: neighbours averaged by ``nn``.
        train: ``(E, 2)`` (user, item) train pairs, needed by ``neigh_mean``.
    """
    if method not in IMPUTATION_METHODS:
        raise GraphrecError(f"unknown imputation '{method}'; choose one of {', '.join(IMPUTATION_METHODS)}")
    if method == "neigh_mean" and train is None:
        raise GraphrecError("imputation 'neigh_mean' needs the train interactions (the co-interaction graph)")
    n = missing.n_items
    r = _interaction_matrix(train, n) if method == "neigh_mean" and features else None
    ref = np.ones(n, dtype=bool) if reference is None else np.asarray(reference, dtype=bool)
    out: dict[str, np.ndarray] = {}
    for m, x in features.items():
        x = x.copy()
        miss = missing.missing[m]
        observed = ~miss & ref
        if method == "zeros":
            x[miss] = 0.0
        else:
            mean = x[observed].mean(axis=0) if observed.any() else np.zeros(x.shape[1], dtype=x.dtype)
            x[miss] = mean
            if method == "nn" and miss.any() and observed.any():
                _nn_fill(x, m, features, missing, observed, nn_k, chunk_size)
            if method == "neigh_mean" and miss.any() and observed.any():
                _neigh_fill(x, features[m], np.flatnonzero(miss), observed, r)
        out[m] = x
    return out


def _nn_fill(x, m, features, missing, observed, k, chunk_size) -> None:
    """Overwrite rows of items missing ``m`` with the mean of ``m`` over their k nearest observed items."""
    targets = np.flatnonzero(missing.missing[m])
    others = [o for o in missing.modalities if o != m]
    if not others:
        return
    # similarity = sum over the other modalities the item has of cosine similarity
    cand = np.flatnonzero(observed)
    k = min(k, len(cand))
    xm = torch.from_numpy(features[m][cand])
    # rows of items missing a modality may hold NaN/inf (allowed by load_features); they are
    # masked out below, but NaN * 0 is NaN, so zero them first
    finite = {o: np.nan_to_num(features[o], nan=0.0, posinf=0.0, neginf=0.0) for o in others}
    for start in range(0, len(targets), chunk_size):
        rows = targets[start : start + chunk_size]
        sim = torch.zeros(len(rows), len(cand))
        # a candidate is comparable with a target when both observe some other modality
        comparable = torch.zeros(len(rows), len(cand), dtype=torch.bool)
        for o in others:
            has = ~missing.missing[o][rows]
            if not has.any():
                continue
            a = F.normalize(torch.from_numpy(finite[o][rows]), dim=1)
            b = F.normalize(torch.from_numpy(finite[o][cand]), dim=1)
            cand_has = torch.from_numpy(~missing.missing[o][cand])
            both = torch.from_numpy(has).unsqueeze(1) & cand_has.unsqueeze(0)
            sim += (a @ b.T) * both  # pairs where either side misses o contribute nothing
            comparable |= both
        # incomparable candidates are never neighbours (not even ahead of negative similarities)
        vals, idx = sim.masked_fill(~comparable, float("-inf")).topk(k, dim=1)
        valid = torch.isfinite(vals)
        filled = ((xm[idx] * valid.unsqueeze(2)).sum(dim=1) / valid.sum(dim=1, keepdim=True).clamp(min=1)).numpy()
        keep = valid.any(dim=1).numpy()  # no comparable candidate: the row keeps the mean
        x[rows[keep]] = filled[keep]


def _interaction_matrix(train: np.ndarray, n_items: int) -> sp.csc_matrix:
    """``(U, N)`` binary CSC matrix of the train pairs (duplicates count once)."""
    train = np.asarray(train, dtype=np.int64).reshape(-1, 2)
    n_users = int(train[:, 0].max()) + 1 if len(train) else 0
    r = sp.csc_matrix((np.ones(len(train), dtype=np.float32), (train[:, 0], train[:, 1])), shape=(n_users, n_items))
    r.data[:] = 1.0
    return r


def _neigh_fill(x: np.ndarray, source: np.ndarray, targets: np.ndarray, observed: np.ndarray, r: sp.csc_matrix) -> None:
    """Overwrite ``x[targets]`` with the mean of ``source`` over each target's observed co-interaction
    neighbours (sparse products, ``O(nnz)``); targets without one keep their row."""
    sources = np.flatnonzero(observed)
    co = (r[:, targets].T @ r[:, sources]).tocsr()  # (targets, sources): shared users
    co.data[:] = 1.0
    counts = np.asarray(co.sum(axis=1)).ravel()
    has = counts > 0
    sums = co @ np.nan_to_num(source[sources].astype(np.float64))
    x[targets[has]] = (sums[has] / counts[has, None]).astype(x.dtype)
