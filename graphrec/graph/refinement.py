"""Graph refinement: rebuild the rows of items that miss a modality and blend them in (spec 4.8 step 4).

For the rows ``R`` of a modality graph ``Ã``:

    Ã[i] <- λ · Ã_new[i] + (1 - λ) · Ã[i]      for i in R, all other rows unchanged,

where ``Ã_new`` is the normalised kNN graph of the current (generated) features. The
result is a set of directed edges *into* the refreshed items: they gain neighbours,
nobody else starts aggregating from them.

Two ways to get ``Ã_new[i]``:

* ``exact=False`` (default): similarities only for the rows in ``R`` — ``O(|R| · N)``
  time, chunked. A neighbour j's normaliser ``r_j`` is taken from ``row_sums`` (the raw
  kNN row sums of the last full build) unless j itself is in ``R``.
* ``exact=True``: the spec's full chunked rebuild over all N rows (``O(N²)`` time, the
  authors' code), so every ``r_j`` is j's current row sum.

``search`` (:class:`graphrec.graph.ann.KnnSearch`) may make either approximate: an index of
the allowed neighbours (all items, or ``candidates``) queried with the refreshed rows only
(``exact=False``), or with all rows (``exact=True``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from graphrec.graph.ann import KnnSearch
from graphrec.graph.knn import blend_rows, knn_topk, row_sums, sym_normalize


def refresh_rows(
    current: sp.csr_matrix,
    x,
    rows: np.ndarray,
    k: int,
    lam: float,
    row_sums_cache: np.ndarray,
    exact: bool = False,
    candidates: np.ndarray | None = None,
    chunk_size: int = 2048,
    search: KnnSearch | None = None,
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Return ``(refined graph, updated raw row sums)``.

    Args:
        current: ``(N, N)`` normalised graph Ã.
        x: ``(N, d_m)`` current features of the modality.
        rows: item ids to refresh.
        row_sums_cache: ``(N,)`` raw kNN row sums of the last build (updated copy is returned).
        candidates: ``(N,)`` bool, items allowed as new neighbours (default all).
        search: exact (``None``) or approximate kNN search (:class:`~graphrec.graph.ann.KnnSearch`).
    """
    rows = np.asarray(rows, dtype=np.int64)
    sums = np.array(row_sums_cache, dtype=np.float64, copy=True)
    if len(rows) == 0 or lam == 0.0:
        return current, sums
    if exact:
        raw = knn_topk(x, k, chunk_size=chunk_size, candidates=candidates, search=search)
        sums = row_sums(raw)
    else:
        raw = knn_topk(x, k, rows=rows, chunk_size=chunk_size, candidates=candidates, search=search)
        sums[rows] = row_sums(raw)[rows]
    new = sym_normalize(raw, sums)
    return blend_rows(current, new, rows, lam), sums
