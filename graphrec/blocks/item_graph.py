"""Item-item propagation on a modality's similarity graph (DGMRec eq. 5, spec 4.2 step 4)."""

from __future__ import annotations

import dgl
import torch

from graphrec.graph.spmm import u_mul_e_sum
from torch import nn

from graphrec.graph.heterograph import knn_relation, refine_relation
from graphrec.registry import register_block


@register_block("item_graph_conv")
class ItemGraphConv(nn.Module):
    """One step ``h' = Ã_m h`` over the ``knn_<m>`` and ``refine_<m>`` relations.

    ``out[i] = Σ_j w_ji h[j]`` summed over both relations (edge weight ``edata['w']``).

    Shapes: ``(N, d)`` -> ``(N, d)``.
    """

    relations = ("knn_{m}", "refine_{m}")

    def forward(self, g: dgl.DGLGraph, h: torch.Tensor, modality: str) -> torch.Tensor:
        out = None
        for rel in (knn_relation(modality), refine_relation(modality)):
            if rel not in g.canonical_etypes or g.num_edges(rel) == 0:
                continue
            msg = u_mul_e_sum(g, rel, h, g.edges[rel].data["w"])
            out = msg if out is None else out + msg
        return out if out is not None else torch.zeros_like(h)


@register_block("item_graph")
class ItemGraphPropagation(nn.Module):
    """``n_layers`` steps of :class:`ItemGraphConv`; the last layer only (no layer mean, no residual).

    Shapes: ``(N, d)`` -> ``(N, d)``.
    """

    relations = ("knn_{m}", "refine_{m}")

    def __init__(self, n_layers: int = 1, conv: nn.Module | None = None) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.conv = conv if conv is not None else ItemGraphConv()

    def forward(self, g: dgl.DGLGraph, h: torch.Tensor, modality: str) -> torch.Tensor:
        for _ in range(self.n_layers):
            h = self.conv(g, h, modality)
        return h
