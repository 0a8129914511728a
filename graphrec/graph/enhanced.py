"""GUME's enhanced user-item graph (Lin et al., CIKM 2024, sec. 3.2): item-item edges between items
every modality considers neighbours, added to the user-item graph before its normalisation.

Per modality ``m``, each item's ``k`` most cosine-similar items (itself included; an item that misses
``m`` has only itself and is nobody's neighbour): ``K_m(i)``. Item ``i`` gains an edge to every
``j ≠ i`` in ``∩_m K_m(i)``. The adjacency ``A = [[0, R], [Rᵀ, S]]`` (``R``: train interactions, ``S``:
those item-item edges) is normalised ``D^-1/2 A D^-1/2`` with the row sums ``r``.

:func:`enhanced_graph` returns the heterograph with the item-item edges in relation ``knn_enhanced``
(edge ``j -> i`` for ``S[i, j]``, weight ``1 / sqrt(r_i r_j)``) and the user-item weights in
``edata['w_enh']`` of ``ui`` / ``iu`` (``1 / sqrt(r_u r_i)``); :class:`~graphrec.blocks.lightgcn.LightGCNConv`
style layers read them through the ``enhanced_conv`` block.
"""

from __future__ import annotations

import dgl
import numpy as np
import scipy.sparse as sp
import torch

from graphrec.graph.ann import KnnSearch
from graphrec.graph.heterograph import IU, UI, build_heterograph, knn_relation
from graphrec.graph.knn import knn_topk

#: name of the enhancement relation (``knn_enhanced``)
ENHANCED = "enhanced"


def modality_neighbours(features: dict[str, np.ndarray], missing: dict[str, np.ndarray], k: int, chunk_size: int = 2048, search: KnnSearch | None = None) -> dict[str, sp.csr_matrix]:
    """``{m: (N, N) binary CSR}``: ``K_m(i)`` as rows (missing items: only themselves).

    ``search``: exact (``None``) or approximate kNN search (:class:`~graphrec.graph.ann.KnnSearch`).
    """
    out = {}
    for m, x in features.items():
        a = knn_topk(x, k, chunk_size=chunk_size, masked=missing.get(m), search=search)
        a.data[:] = 1.0
        out[m] = a
    return out


def shared_neighbours(neighbours: dict[str, sp.csr_matrix]) -> sp.csr_matrix:
    """``(N, N) binary CSR``: ``S[i, j] = 1`` for ``j ≠ i`` in every modality's ``K_m(i)``."""
    mats = list(neighbours.values())
    s = mats[0].copy()
    for a in mats[1:]:
        s = s.multiply(a).tocsr()
    s.setdiag(0)
    s.eliminate_zeros()
    s.data[:] = 1.0
    return s.astype(np.float32)


def enhanced_graph(n_users: int, n_items: int, train: np.ndarray, item_graphs: dict[str, sp.csr_matrix], shared: sp.csr_matrix | None) -> dgl.DGLGraph:
    """The heterograph with ``item_graphs`` (``knn_<m>``), ``knn_enhanced`` and ``w_enh`` (module docstring).

    ``shared = None`` (no enhancement) gives an empty ``knn_enhanced`` and ``w_enh`` equal to LightGCN's ``w``.
    """
    s = shared if shared is not None else sp.csr_matrix((n_items, n_items), dtype=np.float32)
    deg_u = np.bincount(train[:, 0], minlength=n_users).astype(np.float64)
    deg_i = np.bincount(train[:, 1], minlength=n_items).astype(np.float64) + np.asarray(s.sum(axis=1)).ravel()
    inv_u = 1.0 / np.sqrt(deg_u + 1e-7)
    inv_i = 1.0 / np.sqrt(deg_i + 1e-7)
    coo = s.tocoo()
    weighted = sp.csr_matrix(((inv_i[coo.row] * inv_i[coo.col]).astype(np.float32), (coo.row, coo.col)), shape=s.shape)
    g = build_heterograph(n_users, n_items, train, item_graphs={**item_graphs, ENHANCED: weighted})
    users, items = g.edges(etype=UI)
    w = torch.from_numpy((inv_u[users.numpy()] * inv_i[items.numpy()]).astype(np.float32))
    g.edges[UI].data["w_enh"] = w
    g.edges[IU].data["w_enh"] = w
    assert knn_relation(ENHANCED) in g.canonical_etypes
    return g
