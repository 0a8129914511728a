"""An attention-weighted item-item convolution, swappable into DGMRec (docs/extending.md).

    graphrec --plugin examples.attention_block fit dgmrec --set item_graph_block=attention_item_conv

Slot ``item_conv``: ``forward(g, h (N, d), modality) -> (N, d)``, one propagation step.

For every in-edge ``j -> i`` of relation ``knn_<m>`` or ``refine_<m>``::

    s_ji = LeakyReLU(a_src_m · h_j + a_dst_m · h_i)          attention logit from both ends
    α_ji = edge_softmax(s)_ji = exp(s_ji) / Σ_{k -> i} exp(s_ki)
    out_i = Σ_j (deg_in(i) · α_ji) · w_ji · h_j               w = the graph's edge weight Ã_m[i, j]

``deg_in(i) · α`` is 1 for uniform attention, so with the zero-initialised ``a_src``/``a_dst``
the block starts as exactly the default ``item_graph_conv`` (``Ã_m h``) and learns to re-weight
an item's neighbours from there. ``knn_<m>`` and ``refine_<m>`` never share a destination item
(an item's in-edges all live in one of them), so a softmax per relation is the softmax over
the item's whole neighbourhood.

The graph stays on the CPU while ``h`` is on the model's device (CPU or GPU), so the block uses
graphrec's device-agnostic helpers (:mod:`graphrec.graph.spmm`): ``edge_index`` (edge indices on
``h``'s device), ``edge_softmax`` and ``u_mul_e_sum`` (DGL on the CPU, torch operations elsewhere).
"""

from __future__ import annotations

import dgl
import torch
import torch.nn.functional as F
from torch import nn

from graphrec.graph.heterograph import knn_relation, refine_relation
from graphrec.graph.spmm import edge_index, edge_softmax, u_mul_e_sum
from graphrec.registry import register_block


@register_block("attention_item_conv")
class AttentionItemConv(nn.Module):
    """Item-item step re-weighting Ã_m's edges by an edge softmax over both ends' features."""

    # "{m}" is expanded to every modality and checked against the model's heterograph
    relations = ("knn_{m}", "refine_{m}")

    def __init__(self, d: int, modalities: list[str], negative_slope: float = 0.2) -> None:
        super().__init__()
        self.negative_slope = negative_slope
        # one pair of attention vectors per modality, zero = start as the default conv
        self.att_src = nn.ParameterDict({m: nn.Parameter(torch.zeros(d)) for m in modalities})
        self.att_dst = nn.ParameterDict({m: nn.Parameter(torch.zeros(d)) for m in modalities})

    def forward(self, g: dgl.DGLGraph, h: torch.Tensor, modality: str) -> torch.Tensor:
        el = h @ self.att_src[modality]  # (N,) source term
        er = h @ self.att_dst[modality]  # (N,) destination term
        out = torch.zeros_like(h)
        for rel in (knn_relation(modality), refine_relation(modality)):
            if g.num_edges(rel) == 0:
                continue
            src, dst = edge_index(g, rel, h.device)  # (E,) on h's device; the graph stays on the CPU
            logits = F.leaky_relu(el[src] + er[dst], self.negative_slope)  # (E,)
            alpha = edge_softmax(g, rel, logits)  # sums to 1 over each item's in-edges
            deg = torch.bincount(dst, minlength=h.shape[0]).to(h.dtype)[dst]
            weight = g.edges[rel].data["w"].to(h.device) * alpha * deg
            out = out + u_mul_e_sum(g, rel, h, weight)  # Σ_j weight_ji h_j
        return out

    def extra_repr(self) -> str:
        return f"modalities={list(self.att_src)}, negative_slope={self.negative_slope}"
