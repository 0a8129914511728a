"""An item-item graph learned from features (LATTICE, Zhang et al., ACM MM 2021, eq. 2-5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import dgl
import torch
import torch.nn.functional as F
from torch import nn

from graphrec.blocks.encoders import xavier_linear
from graphrec.graph.knn import block_rows
from graphrec.graph.spmm import u_mul_e_sum
from graphrec.registry import register_block


@dataclass
class LearnedGraph:
    """An item-item graph with weights computed by the model: ``graph`` (a DGL graph on the CPU,
    edge ``j -> i`` = "i aggregates from j") and ``weight`` ``(E,)`` on the model's device, possibly
    with a gradient. The weights are not stored in ``edata``, so the graph stays on the CPU while
    the model runs elsewhere (``graphrec.graph.spmm`` propagates on the features' device)."""

    graph: dgl.DGLGraph
    weight: torch.Tensor

    def detach(self) -> "LearnedGraph":
        return LearnedGraph(self.graph, self.weight.detach())

    def propagate(self, h: torch.Tensor) -> torch.Tensor:
        """``(N, d)`` one step ``h'_i = Σ_j w_ji h_j``."""
        return u_mul_e_sum(self.graph, self.graph.canonical_etypes[0], h, self.weight)


@register_block("learned_knn_graph")
class LearnedKNNGraph(nn.Module):
    """LATTICE's learned item graph: kNN of projected features, differentiable in the projection (eq. 2-3).

    ``x̃ = W x + b`` (``d_in -> d``); ``s_ij = cos(x̃_i, x̃_j)``; every item ``i`` keeps its ``k``
    largest ``s_ij`` (itself included), clamped at 0. Similarities are computed ``chunk_size``
    rows at a time, so memory is ``O(chunk x N + N k)``, never ``N x N``.

    :meth:`forward` returns a :class:`LearnedGraph` whose ``weight`` is the kept similarity (with a
    gradient); :func:`combine` mixes modalities and normalises.
    Shapes: ``(N, d_in)`` -> a graph on ``N`` nodes with exactly ``N min(k, N)`` edges.
    """

    relations = ()

    def __init__(self, d_in: int, d: int, k: int = 10, chunk_size: int = 2048) -> None:
        super().__init__()
        self.projection = xavier_linear(d_in, d)
        self.k = k
        self.chunk_size = chunk_size

    def forward(self, x: torch.Tensor) -> LearnedGraph:
        z = F.normalize(self.projection(x), dim=1)
        n = z.shape[0]
        k = min(self.k, n)
        step = block_rows(self.chunk_size, n)
        vals, cols = [], []
        for lo in range(0, n, step):
            v, c = (z[lo : lo + step] @ z.T).topk(k, dim=1)
            vals.append(v.clamp_min(0.0))
            cols.append(c)
        src = torch.cat(cols).reshape(-1).cpu()
        dst = torch.arange(n).repeat_interleave(k)
        return LearnedGraph(dgl.graph((src, dst), num_nodes=n, idtype=torch.int64), torch.cat(vals).reshape(-1))


def combine(graphs: Sequence[LearnedGraph], weights: torch.Tensor) -> LearnedGraph:
    """LATTICE eq. 4-5: ``Ŝ = D^-1/2 (Σ_m a_m S_m) D^-1/2`` with ``D`` the row sums of the mix.

    ``graphs``: outputs of :meth:`LearnedKNNGraph.forward` on the same ``N`` items; ``weights``:
    ``(M,)`` ``a_m``. The result holds the union of their edges (a pair kept by two modalities is
    two parallel edges, whose messages add up) with the normalised weights.
    """
    n = graphs[0].graph.num_nodes()
    src = torch.cat([g.graph.edges()[0] for g in graphs])
    dst = torch.cat([g.graph.edges()[1] for g in graphs])
    s = torch.cat([a * g.weight for a, g in zip(weights, graphs)])
    d_src, d_dst = src.to(s.device), dst.to(s.device)
    r = torch.zeros(n, device=s.device, dtype=s.dtype).index_add(0, d_dst, s)
    inv = torch.where(r > 0, r.clamp_min(1e-12).rsqrt(), torch.zeros_like(r))
    return LearnedGraph(dgl.graph((src, dst), num_nodes=n, idtype=torch.int64), s * inv[d_dst] * inv[d_src])
