"""Cross-modal retrieval of generated features (DGMRec Table 3; spec 4.11, our interpretation).

For an item i whose modality m is hidden, a model generates ``x̃_{i,m}``; all items are
ranked by ``cosine(x̃_{i,m}, X_m[j])`` with the **true** features ``X_m`` and
``Hit@K(i) = 1`` when ``j = i`` is in the top K. The nearest-neighbour baseline
replaces ``x̃_{i,m}`` by the mean of ``X_m`` over the 5 items most cosine-similar to i
in a modality i does have (undefined for items with no modality left).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from graphrec.errors import GraphrecError, GraphrecWarning


def rank_by_cosine(query: torch.Tensor, table: torch.Tensor, k: int, chunk_size: int = 1024) -> torch.Tensor:
    """``(n, k)`` ids of the rows of ``table`` (``(N, d)``) most cosine-similar to each ``query`` row."""
    t = F.normalize(table.float(), dim=1)
    out = []
    for start in range(0, query.shape[0], chunk_size):
        q = F.normalize(query[start : start + chunk_size].float(), dim=1)
        out.append((q @ t.T).topk(min(k, t.shape[0]), dim=1).indices)
    return torch.cat(out) if out else torch.zeros(0, k, dtype=torch.long)


def hit_rates(query: torch.Tensor, truth: torch.Tensor, items: np.ndarray, ks=(10, 20)) -> dict[str, float]:
    """Hit@K of retrieving item ``items[r]`` from ``truth`` with ``query[r]``."""
    if len(items) == 0:
        return {f"hit@{k}": float("nan") for k in ks}
    top = rank_by_cosine(query, truth, max(ks))
    target = torch.as_tensor(items, dtype=torch.long).unsqueeze(1)
    return {f"hit@{k}": float((top[:, :k] == target).any(dim=1).float().mean()) for k in ks}


def nn_baseline(
    truth: dict[str, np.ndarray], available: dict[str, np.ndarray], m: str, items: np.ndarray, n_neighbors: int = 5
) -> tuple[torch.Tensor, np.ndarray]:
    """Queries of the nearest-neighbour baseline for hiding modality ``m`` of ``items``.

    Neighbours are found by cosine similarity summed over the modalities the item has
    (``available[o]`` is the ``(N,)`` bool of items that have modality ``o``; ``m`` is hidden for
    ``items``), among items that have ``m``. Returns the queries and a bool of which items had
    any modality left (the others get no query: "–" in the paper's table).
    """
    items = np.asarray(items, dtype=np.int64)
    others = [o for o in truth if o != m]
    has_any = np.zeros(len(items), dtype=bool)
    sim = torch.zeros(len(items), len(next(iter(truth.values()))))
    for o in others:
        has = available[o][items]
        has_any |= has
        s = F.normalize(torch.from_numpy(truth[o][items]).float(), dim=1) @ F.normalize(torch.from_numpy(truth[o]).float(), dim=1).T
        s = s * torch.from_numpy(available[o]).float().unsqueeze(0)
        sim += s * torch.from_numpy(has).float().unsqueeze(1)
    sim[:, ~torch.from_numpy(available[m])] = -np.inf
    sim[torch.arange(len(items)), torch.from_numpy(items)] = -np.inf  # never the item itself
    idx = sim.topk(n_neighbors, dim=1).indices
    query = torch.from_numpy(truth[m])[idx].float().mean(dim=1)
    return query[torch.from_numpy(has_any)], has_any


def evaluate_retrieval(generated: dict[str, np.ndarray], dataset, ks=(10, 20)) -> list[dict]:
    """Rows of the Table 3 protocol for every modality and group (missing only m / missing all).

    ``generated``: ``{m: (N, d_m)}`` generated features; ``dataset.raw_features`` are the truth.
    Hidden items whose true row is all zero have no ground truth and are left out; a modality
    whose feature file holds NaN/inf or whose hidden rows are all zero is skipped (a
    :class:`GraphrecWarning`), and a :class:`GraphrecError` when no modality is left, instead of
    reporting a meaningless Hit@K.
    """
    truth = dataset.raw_features
    miss = dataset.missing
    available = {m: ~miss.missing[m] for m in miss.modalities}
    rows = []
    no_truth = []
    for m in miss.modalities:
        hidden = miss.missing[m]
        if not hidden.any():
            continue
        has_truth = np.abs(np.nan_to_num(truth[m], nan=1.0)).sum(axis=1) > 0
        if not np.isfinite(truth[m]).all() or not has_truth[hidden].any():
            no_truth.append(m)
            continue
        groups = {"missing 1": np.flatnonzero(miss.only(m) & has_truth)}
        if len(miss.modalities) > 1:
            groups["missing all"] = np.flatnonzero((miss.count() == len(miss.modalities)) & has_truth)
        for gname, items in groups.items():
            if not len(items):
                continue
            truth_t = torch.from_numpy(truth[m])
            gen = hit_rates(torch.from_numpy(generated[m][items]), truth_t, items, ks)
            rows.append({"modality": m, "group": gname, "items": int(len(items)), "method": "generated", **gen})
            q, ok = nn_baseline(truth, available, m, items)
            if ok.any():
                nn = hit_rates(q, truth_t, items[ok], ks)
            else:
                nn = {f"hit@{k}": None for k in ks}
            rows.append({"modality": m, "group": gname, "items": int(ok.sum()), "method": "nearest neighbours", **nn})
    if no_truth:
        what = (f"the feature rows of the items that miss {', '.join(no_truth)} are all zero or absent (NaN), so there is "
                "no ground truth to retrieve")
        if not rows:
            raise GraphrecError(
                f"retrieval-eval: {what}; it needs feature files that keep the true rows of masked items "
                "(a mask made with 'graphrec mask' over complete features, or the synthetic set)"
            )
        warnings.warn(f"retrieval-eval: {what}; those modalities are left out", GraphrecWarning, stacklevel=2)
    return rows
