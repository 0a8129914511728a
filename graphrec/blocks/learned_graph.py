"""An item-item graph learned from features (LATTICE, Zhang et al., ACM MM 2021, eq. 2-4)."""

from __future__ import annotations

import dgl
import torch
import torch.nn.functional as F
from torch import nn

from graphrec.blocks.encoders import xavier_linear
from graphrec.graph.knn import block_rows
from graphrec.graph.spmm import u_mul_e_sum
from graphrec.registry import register_block


@register_block("learned_knn_graph")
class LearnedKNNGraph(nn.Module):
    """kNN graph of projected features, differentiable in the projection.

    ``x̃ = W x + b`` (``d_in -> d``); ``s_ij = cos(x̃_i, x̃_j)``; every item ``i`` keeps its ``k``
    largest ``s_ij`` (itself included), clamped at 0; weights are normalised
    ``s_ij / sqrt(r_i r_j)`` with ``r`` the kept row sums (``D^-1/2 S D^-1/2``). Similarities are
    computed ``chunk_size`` rows at a time, so memory is ``O(chunk x N + N k)``, never ``N x N``.

    :meth:`forward` returns the graph (edge ``j -> i`` = "i aggregates from j", ``edata['w']`` with a
    gradient); :meth:`propagate` is one step ``h' = Ŝ h``.
    Shapes: ``(N, d_in)`` -> a DGL graph on ``N`` nodes with ``N k`` edges; ``propagate``: ``(N, d)`` -> ``(N, d)``.
    """

    relations = ()

    def __init__(self, d_in: int, d: int, k: int = 10, chunk_size: int = 2048) -> None:
        super().__init__()
        self.projection = xavier_linear(d_in, d)
        self.k = k
        self.chunk_size = chunk_size

    def forward(self, x: torch.Tensor) -> dgl.DGLGraph:
        z = F.normalize(self.projection(x), dim=1)
        n = z.shape[0]
        k = min(self.k, n)
        vals, cols = [], []
        step = block_rows(self.chunk_size, n)
        for lo in range(0, n, step):
            v, c = (z[lo : lo + step] @ z.T).topk(k, dim=1)
            vals.append(v.clamp_min(0.0))
            cols.append(c)
        w, src = torch.cat(vals).reshape(-1), torch.cat(cols).reshape(-1)
        dst = torch.arange(n, device=z.device).repeat_interleave(k)
        r = torch.zeros(n, device=z.device, dtype=w.dtype).index_add(0, dst, w)
        inv = torch.where(r > 0, r.clamp_min(1e-12).rsqrt(), torch.zeros_like(r))
        g = dgl.graph((src, dst), num_nodes=n, idtype=torch.int64)
        g.edata["w"] = w * inv[dst] * inv[src]
        return g

    @staticmethod
    def propagate(g: dgl.DGLGraph, h: torch.Tensor) -> torch.Tensor:
        """``(N, d)`` one step over a graph of :meth:`forward`."""
        return u_mul_e_sum(g, g.canonical_etypes[0], h, g.edata["w"])
