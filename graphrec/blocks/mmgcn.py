"""MMGCN's modality-specific graph layer (Wei et al., ACM MM 2019, eq. 1-5).

One layer of one modality's tower on the user-item graph, for users and items together:

    h   = leaky_relu(norm(mean_{n ∈ N(v)} (W₁ x_n + b₁)))          aggregation over the bipartite neighbours (eq. 1-2)
    x̂   = leaky_relu(W₃ x_v + b₃) + e_v                            the node's own features plus its ID embedding (eq. 5)
    x'_v = leaky_relu(W₂ h + b₂ + x̂)                               combination ("add" variant, eq. 4)

(norm: row-wise L2; mean over train edges with weight ``w_mean``; a node without edges gets ``h = leaky_relu(0)``).
"""

from __future__ import annotations

import dgl
import torch
import torch.nn.functional as F
from torch import nn

from graphrec.graph.heterograph import IU, UI
from graphrec.graph.spmm import u_mul_e_sum
from graphrec.registry import register_block


def _xavier_normal(d_in: int, d_out: int) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    nn.init.xavier_normal_(layer.weight)
    return layer


@register_block("mmgcn_layer")
class MMGCNLayer(nn.Module):
    """One MMGCN layer (module docstring); ``W₁`` uniform in [-0.1, 0.1] with zero bias, ``W₂``, ``W₃``
    xavier-normal, as the DGMRec authors' code.

    Shapes: ``forward(g, x {'user': (U, d_in), 'item': (N, d_in)}, ids {'user': (U, d), 'item': (N, d)})``
    -> ``{'user': (U, d), 'item': (N, d)}``.
    """

    relations = (UI, IU)

    def __init__(self, d_in: int, d: int) -> None:
        super().__init__()
        self.conv = nn.Linear(d_in, d_in)
        nn.init.uniform_(self.conv.weight, -0.1, 0.1)
        nn.init.zeros_(self.conv.bias)
        self.combine = _xavier_normal(d_in, d)
        self.own = _xavier_normal(d_in, d)

    def aggregate(self, g: dgl.DGLGraph, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{'user': (U, d_in), 'item': (N, d_in)}``: ``norm(mean_{n ∈ N(v)} (W₁ x_n + b₁))``."""
        msg = {k: self.conv(v) for k, v in x.items()}
        return {
            "user": F.normalize(u_mul_e_sum(g, IU, msg["item"], g.edges[IU].data["w_mean"]), dim=1),
            "item": F.normalize(u_mul_e_sum(g, UI, msg["user"], g.edges[UI].data["w_mean"]), dim=1),
        }

    def forward(self, g: dgl.DGLGraph, x: dict[str, torch.Tensor], ids: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = self.aggregate(g, x)
        out = {}
        for k in ("user", "item"):
            own = F.leaky_relu(self.own(x[k])) + ids[k]
            out[k] = F.leaky_relu(self.combine(F.leaky_relu(h[k])) + own)
        return out
