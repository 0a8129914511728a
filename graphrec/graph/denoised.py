"""DAMRS's item graphs (Xv et al., KDD 2024): denoised modality kNN graphs and the co-interaction graph.

* :func:`denoised_knn_graphs`: for every modality ``m`` the cosine similarities ``S_m``; an entry
  ``(i, j)`` survives only where *every* modality finds the pair at least as similar as its own
  average pair (``S_m[i, j] >= mean(S_m)`` for all ``m``, the mean over all ``N²`` pairs, computed in
  closed form as ``||Σ_i x̂_i||² / N²``); each item keeps its ``k`` most similar surviving items in
  each modality, with weight 1, normalised ``D^-1/2 A D^-1/2``.
* :func:`cooccurrence_graph`: each item's ``k`` items most often interacted with by the same users
  (train split), plus itself, weight 1, normalised the same way (DAMRS's behaviour, "session", graph).

Both are built once, in row blocks of ``chunk_size`` (memory ``O(chunk · N)``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from graphrec.graph.knn import block_rows, sym_normalize


def _binary_csr(rows: list[np.ndarray], cols: list[np.ndarray], n: int) -> sp.csr_matrix:
    r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    return sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=(n, n))


def denoised_knn_graphs(features: dict[str, np.ndarray], k: int, chunk_size: int = 2048) -> dict[str, sp.csr_matrix]:
    """``{m: (N, N) CSR}``: the denoised, binary, normalised kNN graphs (module docstring)."""
    mods = list(features)
    xs = {m: F.normalize(torch.as_tensor(np.asarray(features[m], dtype=np.float32)), dim=1) for m in mods}
    n = next(iter(xs.values())).shape[0]
    means = {m: float(x.sum(0).pow(2).sum()) / float(n) ** 2 for m, x in xs.items()}
    kk = min(k, n)
    rows: dict[str, list] = {m: [] for m in mods}
    cols: dict[str, list] = {m: [] for m in mods}
    step = block_rows(chunk_size, n)
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        sims = {m: x[lo:hi] @ x.T for m, x in xs.items()}
        keep = torch.ones(hi - lo, n, dtype=torch.bool)
        for m in mods:
            keep &= sims[m] >= means[m]
        for m in mods:
            s = sims[m].masked_fill(~keep, float("-inf"))
            val, idx = s.topk(kk, dim=1)
            ok = torch.isfinite(val)
            r = torch.arange(lo, hi).unsqueeze(1).expand_as(idx)
            rows[m].append(r[ok].numpy())
            cols[m].append(idx[ok].numpy())
    return {m: sym_normalize(_binary_csr(rows[m], cols[m], n)) for m in mods}


def cooccurrence_graph(train: np.ndarray, n_users: int, n_items: int, k: int, chunk_size: int = 2048) -> sp.csr_matrix:
    """``(N, N) CSR``: each item's ``k`` most co-interacted items (count > 0) plus itself, binary, normalised."""
    r = sp.csr_matrix((np.ones(len(train), dtype=np.float32), (train[:, 0], train[:, 1])), shape=(n_users, n_items))
    rt = r.T.tocsr()
    rows, cols = [np.arange(n_items)], [np.arange(n_items)]
    step = block_rows(chunk_size, n_items)
    for lo in range(0, n_items, step):
        hi = min(n_items, lo + step)
        counts = torch.from_numpy((rt[lo:hi] @ r).toarray())
        counts[torch.arange(hi - lo), torch.arange(lo, hi)] = 0.0
        val, idx = counts.topk(min(k, n_items), dim=1)
        ok = val > 0
        rr = torch.arange(lo, hi).unsqueeze(1).expand_as(idx)
        rows.append(rr[ok].numpy())
        cols.append(idx[ok].numpy())
    return sym_normalize(_binary_csr(rows, cols, n_items))
