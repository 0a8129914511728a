"""Nearest items in feature space across modalities, for items without interactions.

:func:`content_neighbours` finds, for query items, the ``k`` most similar items of a table
(old items) by cosine similarity averaged over the modalities both items observe. It serves
the content-kNN baseline (:mod:`graphrec.models.content_knn`) and DGMRec's scoring of items
added after training (:mod:`graphrec.models.dgmrec_new_items`). Memory ``O(chunk x N)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).float()


@torch.no_grad()
def content_neighbours(
    query: dict[str, np.ndarray | torch.Tensor],
    query_observed: np.ndarray,
    table: dict[str, np.ndarray | torch.Tensor],
    table_observed: np.ndarray,
    k: int,
    candidates: np.ndarray | None = None,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbours of query items among table items and their similarities.

    Args:
        query: ``{m: (n, d_m)}`` features of the query items (rows of unobserved modalities ignored).
        query_observed: ``(n, M)`` bool, column ``j`` = modality ``list(query)[j]``.
        table: ``{m: (N, d_m)}`` features of the table items (same modality order).
        table_observed: ``(N, M)`` bool.
        k: neighbours per query (capped at N).
        candidates: ``(N,)`` bool, table items that may be neighbours (default all).

    Returns:
        ``(idx, sim)``, each ``(n, k)``: table ids and the mean cosine similarity over the
        modalities both items observe, best first. Pairs sharing no modality, and
        non-candidates, have similarity ``-inf`` (they appear only when fewer than ``k``
        items qualify).
    """
    mods = list(query)
    qo = torch.as_tensor(np.asarray(query_observed, dtype=bool))
    to = torch.as_tensor(np.asarray(table_observed, dtype=bool)).float()
    n_table = to.shape[0]
    k = min(int(k), n_table)
    tn = {m: F.normalize(torch.nan_to_num(_t(table[m])), dim=1) for m in mods}
    qn = {m: F.normalize(torch.nan_to_num(_t(query[m])), dim=1) for m in mods}
    cand = None if candidates is None else torch.as_tensor(np.asarray(candidates, dtype=bool))
    idx_out, sim_out = [], []
    n = qo.shape[0]
    for lo in range(0, n, chunk_size):
        hi = min(lo + chunk_size, n)
        total = torch.zeros(hi - lo, n_table)
        shared = torch.zeros(hi - lo, n_table)
        for j, m in enumerate(mods):
            w = qo[lo:hi, j].float().unsqueeze(1) * to[:, j].unsqueeze(0)  # both observe m
            total += (qn[m][lo:hi] @ tn[m].T) * w
            shared += w
        sim = torch.where(shared > 0, total / shared.clamp_min(1.0), torch.full_like(total, -np.inf))
        if cand is not None:
            sim[:, ~cand] = -np.inf
        v, i = sim.topk(k, dim=1)
        idx_out.append(i)
        sim_out.append(v)
    if not idx_out:
        return torch.zeros(0, k, dtype=torch.long), torch.zeros(0, k)
    return torch.cat(idx_out), torch.cat(sim_out)


def neighbour_weights(sim: torch.Tensor) -> torch.Tensor:
    """Row-normalised non-negative weights ``max(sim, 0) / Σ max(sim, 0)`` (rows with no positive similarity: 0)."""
    w = torch.nan_to_num(sim, neginf=0.0).clamp_min(0.0)
    s = w.sum(dim=1, keepdim=True)
    return torch.where(s > 0, w / s.clamp_min(1e-12), torch.zeros_like(w))
