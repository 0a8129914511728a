"""User modality features aggregated from interacted items (DGMRec eq. 6, spec 4.2 step 5)."""

from __future__ import annotations

import dgl
import torch

from graphrec.graph.spmm import u_mul_e_sum
from torch import nn

from graphrec.graph.heterograph import IU
from graphrec.registry import register_block


@register_block("user_aggregation")
class UserAggregation(nn.Module):
    """``h_u = (1 / (deg(u) + 1e-7)) Σ_{i ∈ N(u)} h_i`` over train edges (``iu``, ``w_mean``).

    ``weight="w"`` aggregates with LightGCN's symmetric weight ``1/sqrt(deg(u) deg(i))`` instead
    (MGCN's ``R``). Shapes: ``(N, d)`` -> ``(U, d)``; users without train items get 0.
    """

    relations = (IU,)

    def __init__(self, weight: str = "w_mean") -> None:
        super().__init__()
        self.weight = weight

    def forward(self, g: dgl.DGLGraph, item_feats: torch.Tensor) -> torch.Tensor:
        return u_mul_e_sum(g, IU, item_feats, g.edges[IU].data[self.weight])
