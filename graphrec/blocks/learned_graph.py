"""An item-item graph learned from features (LATTICE, Zhang et al., ACM MM 2021, eq. 2-5)."""

from __future__ import annotations

from typing import Sequence

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
    """LATTICE's learned item graph: kNN of projected features, differentiable in the projection (eq. 2-3).

    ``x̃ = W x + b`` (``d_in -> d``); ``s_ij = cos(x̃_i, x̃_j)``; every item ``i`` keeps its ``k``
    largest ``s_ij`` (itself included), clamped at 0. Similarities are computed ``chunk_size``
    rows at a time, so memory is ``O(chunk x N + N k)``, never ``N x N``.

    :meth:`forward` returns the graph: edge ``j -> i`` = "i aggregates from j", ``edata['s']`` =
    the kept similarity (with a gradient). :func:`combine` mixes modalities and normalises;
    :meth:`propagate` is one step over the result.
    Shapes: ``(N, d_in)`` -> a DGL graph on ``N`` nodes with exactly ``N min(k, N)`` edges.
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
        step = block_rows(self.chunk_size, n)
        vals, cols = [], []
        for lo in range(0, n, step):
            v, c = (z[lo : lo + step] @ z.T).topk(k, dim=1)
            vals.append(v.clamp_min(0.0))
            cols.append(c)
        g = dgl.graph((torch.cat(cols).reshape(-1), torch.arange(n, device=z.device).repeat_interleave(k)), num_nodes=n, idtype=torch.int64)
        g.edata["s"] = torch.cat(vals).reshape(-1)
        return g

    @staticmethod
    def propagate(g: dgl.DGLGraph, h: torch.Tensor) -> torch.Tensor:
        """``(N, d)`` one step ``h' = Ŝ h`` over a graph of :func:`combine` (``edata['w']``)."""
        return u_mul_e_sum(g, g.canonical_etypes[0], h, g.edata["w"])


def combine(graphs: Sequence[dgl.DGLGraph], weights: torch.Tensor) -> dgl.DGLGraph:
    """LATTICE eq. 4-5: ``Ŝ = D^-1/2 (Σ_m a_m S_m) D^-1/2`` with ``D`` the row sums of the mix.

    ``graphs``: outputs of :meth:`LearnedKNNGraph.forward` on the same ``N`` items; ``weights``:
    ``(M,)`` ``a_m``. The result holds the union of their edges (a pair kept by two modalities is
    two parallel edges, whose messages add up) with the normalised weight in ``edata['w']``.
    """
    n = graphs[0].num_nodes()
    src = torch.cat([g.edges()[0] for g in graphs])
    dst = torch.cat([g.edges()[1] for g in graphs])
    s = torch.cat([a * g.edata["s"] for a, g in zip(weights, graphs)])
    r = torch.zeros(n, device=s.device, dtype=s.dtype).index_add(0, dst, s)
    inv = torch.where(r > 0, r.clamp_min(1e-12).rsqrt(), torch.zeros_like(r))
    out = dgl.graph((src, dst), num_nodes=n, idtype=torch.int64)
    out.edata["w"] = s * inv[dst] * inv[src]
    return out
