"""Chunked cosine kNN item-item graphs (spec 4.3) with O(N*k) memory.

All matrices here are ``scipy.sparse.csr_matrix`` of shape ``(N, N)`` in the spec's
orientation: entry ``A[i, j]`` means "item i aggregates from item j" (an edge
``j -> i`` in DGL). Similarities are computed ``chunk_size`` rows at a time, so the
largest temporary is ``chunk_size x N``; no dense ``N x N`` matrix is ever built. For
very large N the rows per block are lowered so that a block holds at most
:data:`MAX_BLOCK_ELEMENTS` similarities (1 GiB of float32; 268 rows at N = 10^6); the
result does not depend on the block size. Masking, normalisation and row blending are
sparse products with diagonal matrices, O(nnz) = O(N k).

Every builder takes ``search`` (:class:`graphrec.graph.ann.KnnSearch`, from the model's
``knn_method`` / ``ann_*`` keys): ``None`` or ``exact`` is this module's exact search, ``ann``
(or ``auto`` with many rows to search) the approximate index of :mod:`graphrec.graph.ann`,
which returns the same kind of graph.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from graphrec.graph.ann import KnnSearch, ann_topk


#: most similarities one kNN block may hold (rows x N float32 values): 2^28 = 1 GiB
MAX_BLOCK_ELEMENTS = 1 << 28


def block_rows(chunk_size: int, n: int) -> int:
    """Rows per similarity block: ``chunk_size``, lowered so a block stays within :data:`MAX_BLOCK_ELEMENTS`."""
    return max(1, min(int(chunk_size), MAX_BLOCK_ELEMENTS // max(int(n), 1)))


def _as_tensor(x) -> torch.Tensor:
    t = torch.as_tensor(x)
    return t.float() if t.dtype != torch.float32 else t


def knn_topk(
    x,
    k: int,
    rows: np.ndarray | None = None,
    chunk_size: int = 2048,
    masked: np.ndarray | None = None,
    candidates: np.ndarray | None = None,
    search: KnnSearch | None = None,
) -> sp.csr_matrix:
    """Top-k cosine neighbours of ``rows`` (default: all items), weighted by similarity.

    Args:
        x: ``(N, d)`` features (tensor or array).
        k: neighbours kept per row (the item itself, similarity 1, is usually one of them).
        rows: item ids whose rows are computed; other rows of the result are empty.
        chunk_size: rows per similarity block (capped by :func:`block_rows` for very large N).
        masked: ``(N,)`` bool, masking *before* the top-k (new-item training graph): a masked
            item's row is the unit self loop and no row may pick it as a neighbour.
        candidates: ``(N,)`` bool, only these items (plus the row's own item) may be neighbours.
        search: exact (``None``) or approximate search (:class:`~graphrec.graph.ann.KnnSearch`;
            ``auto`` decides on the number of rows searched).

    Returns:
        ``(N, N)`` CSR with at most ``k`` entries per computed row (zero similarities dropped).
    """
    if search is not None:
        n_rows = int(np.shape(x)[0]) if rows is None else len(rows)
        if search.use_ann(n_rows):
            return ann_topk(x, k, search, rows=rows, masked=masked, candidates=candidates)
    xt = F.normalize(_as_tensor(x), dim=1)
    n = xt.shape[0]
    row_ids = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    k = min(k, n)
    blocked = torch.zeros(n, dtype=torch.bool)
    if masked is not None:
        blocked |= torch.as_tensor(np.asarray(masked, dtype=bool))
    if candidates is not None:
        blocked |= ~torch.as_tensor(np.asarray(candidates, dtype=bool))
    masked_t = torch.as_tensor(np.asarray(masked, dtype=bool)) if masked is not None else None
    step = block_rows(chunk_size, n)
    all_r, all_c, all_v = [], [], []
    with torch.no_grad():
        for start in range(0, len(row_ids), step):
            r = torch.as_tensor(row_ids[start : start + step])
            sim = xt[r] @ xt.T  # (chunk, N)
            if blocked.any():
                sim[:, blocked] = 0.0
            ar = torch.arange(len(r))
            if candidates is not None:
                sim[ar, r] = 1.0  # an item may always keep itself
            if masked_t is not None:
                m = masked_t[r]
                sim[m] = 0.0
                sim[ar[m], r[m]] = 1.0
            vals, idx = sim.topk(k, dim=1)
            all_r.append(r.unsqueeze(1).expand_as(idx).reshape(-1))
            all_c.append(idx.reshape(-1))
            all_v.append(vals.reshape(-1))
    if not all_r:
        return sp.csr_matrix((n, n), dtype=np.float32)
    rr = torch.cat(all_r).numpy()
    cc = torch.cat(all_c).numpy()
    vv = torch.cat(all_v).numpy().astype(np.float32)
    keep = vv != 0
    return sp.csr_matrix((vv[keep], (rr[keep], cc[keep])), shape=(n, n))


def mask_missing(a: sp.csr_matrix, missing: np.ndarray) -> sp.csr_matrix:
    """Masking *after* the top-k (spec 4.3): rows and columns of missing items are cleared,
    then each missing item gets a unit self loop. Other rows are not refilled."""
    missing = np.asarray(missing, dtype=bool)
    keep = sp.diags((~missing).astype(np.float32))
    out = (keep @ a @ keep).tocsr()
    out = out + sp.diags(missing.astype(np.float32))
    out = out.tocsr()
    out.eliminate_zeros()
    return out


def row_sums(a: sp.csr_matrix) -> np.ndarray:
    return np.asarray(a.sum(axis=1)).ravel()


def sym_normalize(a: sp.csr_matrix, sums: np.ndarray | None = None) -> sp.csr_matrix:
    """``Ã[i, j] = A[i, j] / sqrt(r_i r_j)`` with ``r`` the **row** sums (spec 4.3), 0 where ``r <= 0``.

    ``sums`` overrides the row sums (used when only some rows were recomputed).
    """
    r = row_sums(a) if sums is None else np.asarray(sums, dtype=np.float64)
    inv = np.zeros_like(r, dtype=np.float64)
    pos = r > 0
    inv[pos] = 1.0 / np.sqrt(r[pos])
    d = sp.diags(inv.astype(np.float32))
    out = (d @ a @ d).tocsr().astype(np.float32)
    out.eliminate_zeros()
    return out


def build_knn_graph(
    x,
    k: int,
    missing: np.ndarray | None = None,
    masked_before: np.ndarray | None = None,
    chunk_size: int = 2048,
    search: KnnSearch | None = None,
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Normalised item-item graph of one modality (spec 4.3).

    Args:
        x: ``(N, d_m)`` raw (imputed) features.
        missing: ``(N,)`` bool Ω_m, masked after the top-k (missing-only setting).
        masked_before: ``(N,)`` bool, masked before the top-k (new items, training graph).

    Returns:
        ``(Ã, r)``: the normalised CSR graph and the raw row sums used to normalise it.
    """
    a = knn_topk(x, k, chunk_size=chunk_size, masked=masked_before, search=search)
    if missing is not None and np.any(missing):
        a = mask_missing(a, missing)
    r = row_sums(a)
    return sym_normalize(a, r), r


def blend_rows(current: sp.csr_matrix, new: sp.csr_matrix, rows: np.ndarray, lam: float) -> sp.csr_matrix:
    """Row refresh of spec 4.8: ``Ã[i] <- lam * new[i] + (1 - lam) * Ã[i]`` for ``i in rows``; other rows unchanged."""
    n = current.shape[0]
    sel = np.zeros(n, dtype=np.float32)
    sel[np.asarray(rows, dtype=np.int64)] = 1.0
    out = (current + lam * (sp.diags(sel) @ (new - current))).tocsr().astype(np.float32)
    out.eliminate_zeros()
    return out


def frozen_knn_graph(x, k: int, binary: bool = True, chunk_size: int = 2048, search: KnnSearch | None = None) -> sp.csr_matrix:
    """The frozen item graph of FREEDOM (``binary``) and LATTICE (similarity-weighted) for one modality.

    Every item keeps its ``k`` most cosine-similar items (itself included) with weight 1
    (``binary``) or ``max(similarity, 0)``; the result is normalised ``D^-1/2 A D^-1/2`` with the
    row sums (:func:`sym_normalize`). Unlike :func:`build_knn_graph`, no item is masked: the
    features are already filled (``imputation``).

    Shapes: ``(N, d_m)`` features -> ``(N, N)`` CSR with at most ``k`` entries per row.
    """
    a = knn_topk(x, k, chunk_size=chunk_size, search=search)
    if binary:
        a.data[:] = 1.0
    else:
        a = a.maximum(0).tocsr()
        a.eliminate_zeros()
    return sym_normalize(a)
