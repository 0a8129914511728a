"""The heterogeneous DGL graph of a dataset.

Schema (node types ``user`` and ``item``):

===============================  =====================================================
relation                         meaning and edge data
===============================  =====================================================
``('user', 'ui', 'item')``       train interactions, user -> item
``('item', 'iu', 'user')``       the same interactions, item -> user
``('item', 'knn_<m>', 'item')``  kNN similarity of modality ``m``; edge j -> i means
                                 "item i aggregates from item j" (spec 9.3)
``('item', 'refine_<m>', 'item')`` directed refinement edges into items missing ``m``
                                 (DGMRec graph refinement, spec 4.8)
===============================  =====================================================

Every relation carries ``edata['w']``: LightGCN's symmetric weight
``1/sqrt((deg(u)+1e-7)(deg(i)+1e-7))`` on ``ui``/``iu`` (plus ``w_mean`` =
``1/(deg(dst)+1e-7)`` for mean aggregation) and the normalised similarity weight
``Ã[i, j]`` on the item-item relations. For one modality, ``knn_<m>`` and
``refine_<m>`` never share a destination item, so summing messages over both gives
``Ã_m h``.
"""

from __future__ import annotations

import dgl
import numpy as np
import scipy.sparse as sp
import torch

UI = ("user", "ui", "item")
IU = ("item", "iu", "user")
EPS = 1e-7


def knn_relation(modality: str) -> tuple[str, str, str]:
    return ("item", f"knn_{modality}", "item")


def refine_relation(modality: str) -> tuple[str, str, str]:
    return ("item", f"refine_{modality}", "item")


def _item_edges(a: sp.csr_matrix) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    coo = a.tocoo()
    # row = destination (aggregating item), col = source
    return torch.from_numpy(coo.col.astype(np.int64)), torch.from_numpy(coo.row.astype(np.int64)), torch.from_numpy(
        coo.data.astype(np.float32)
    )


def build_heterograph(
    n_users: int,
    n_items: int,
    train: np.ndarray,
    item_graphs: dict[str, sp.csr_matrix] | None = None,
    refined_rows: dict[str, np.ndarray] | None = None,
) -> dgl.DGLGraph:
    """Build the dataset heterograph.

    Args:
        train: ``(E, 2)`` unique (user, item) training pairs.
        item_graphs: ``{m: Ã_m}`` normalised ``(N, N)`` item-item matrices.
        refined_rows: ``{m: (N,) bool}`` items whose rows of ``Ã_m`` are refinement edges; their
            in-edges go to ``refine_<m>`` and the rest to ``knn_<m>``.
    """
    users = torch.from_numpy(np.asarray(train[:, 0], dtype=np.int64))
    items = torch.from_numpy(np.asarray(train[:, 1], dtype=np.int64))
    data: dict = {UI: (users, items), IU: (items, users)}
    weights: dict = {}
    for m, a in (item_graphs or {}).items():
        src, dst, w = _item_edges(a)
        refined = (refined_rows or {}).get(m)
        is_ref = torch.from_numpy(np.asarray(refined, dtype=bool))[dst] if refined is not None else torch.zeros(
            len(dst), dtype=torch.bool
        )
        data[knn_relation(m)] = (src[~is_ref], dst[~is_ref])
        data[refine_relation(m)] = (src[is_ref], dst[is_ref])
        weights[knn_relation(m)] = w[~is_ref]
        weights[refine_relation(m)] = w[is_ref]
    g = dgl.heterograph(data, num_nodes_dict={"user": n_users, "item": n_items}, idtype=torch.int64)
    deg_u = torch.bincount(users, minlength=n_users).float()
    deg_i = torch.bincount(items, minlength=n_items).float()
    sym = 1.0 / torch.sqrt((deg_u[users] + EPS) * (deg_i[items] + EPS))
    g.edges[UI].data["w"] = sym
    g.edges[IU].data["w"] = sym
    g.edges[UI].data["w_mean"] = 1.0 / (deg_i[items] + EPS)
    g.edges[IU].data["w_mean"] = 1.0 / (deg_u[users] + EPS)
    for rel, w in weights.items():
        g.edges[rel].data["w"] = w
    return g


def item_graph_matrix(g: dgl.DGLGraph, modality: str) -> sp.csr_matrix:
    """Recover ``Ã_m`` (knn + refinement edges) from the heterograph as an ``(N, N)`` CSR matrix."""
    n = g.num_nodes("item")
    mats = []
    for rel in (knn_relation(modality), refine_relation(modality)):
        if rel in g.canonical_etypes:
            src, dst = g.edges(etype=rel)
            w = g.edges[rel].data["w"]
            mats.append(sp.csr_matrix((w.cpu().numpy(), (dst.cpu().numpy(), src.cpu().numpy())), shape=(n, n)))
    return sum(mats[1:], mats[0]).tocsr() if mats else sp.csr_matrix((n, n), dtype=np.float32)
