"""Modality features aggregated through users (CI2MG eq. 1, spec 5.2 step 3).

Each item's modality vector is replaced by a two-hop, user-mediated average: users
average the (projected) features of their train items, then items average the
user vectors of their train users. Both hops are mean aggregations over the
heterograph's ``iu`` / ``ui`` relations with the edge weight ``w_mean``
(``1 / (deg(dst) + 1e-7)``), so nodes without train edges get 0.
"""

from __future__ import annotations

import dgl
import torch

from graphrec.graph.spmm import u_mul_e_sum
from torch import nn

from graphrec.graph.heterograph import IU, UI
from graphrec.registry import register_block


@register_block("modality_aggregation")
class ModalityAggregation(nn.Module):
    """``F^U[u] = avg_{i∈N(u)} P[i]``, ``F^V[i] = avg_{u∈N(i)} F^U[u]`` (CI2MG eq. 1).

    Message passing with ``dgl.ops.u_mul_e_sum`` on ``g[('item','iu','user')]`` then
    ``g[('user','ui','item')]``, edge weight ``edata[weight]`` (default ``w_mean``).

    Shapes: ``P (N, d)`` -> ``(F^U (U, d), F^V (N, d))``. Users without train items
    and items without train users get zero rows.
    """

    relations = (UI, IU)

    def __init__(self, weight: str = "w_mean") -> None:
        super().__init__()
        self.weight = weight

    def forward(self, g: dgl.DGLGraph, item_feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        user = u_mul_e_sum(g, IU, item_feats, g.edges[IU].data[self.weight])
        item = u_mul_e_sum(g, UI, user, g.edges[UI].data[self.weight])
        return user, item

    def extra_repr(self) -> str:
        return f"weight={self.weight!r}"
