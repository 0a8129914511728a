"""Views of the user-item graph with some train edges removed (SGL's edge dropout, FREEDOM's pruning).

Both blocks keep exactly ``floor(keep * E)`` of the ``E`` user-item interactions (at least one
when ``keep > 0``; the ``int(E * (1 - ratio))`` of both authors' code), sampled without replacement, and rebuild the ``ui``/``iu`` relations with
weights recomputed from the kept degrees (:func:`graphrec.graph.heterograph.build_heterograph`),
as both papers renormalise the dropped adjacency. Sampling is a Gumbel top-k on
``log p_e`` (equivalent to drawing edges one by one with probability ``∝ p_e``, without
``torch.multinomial``'s 2^24-category limit); the torch RNG drives it, so a seeded run repeats.

Shapes: ``forward(g, keep)`` takes the heterograph (reads ``ui``) and returns a new
heterograph with only ``ui``/``iu`` on the same device.
"""

from __future__ import annotations

import math

import dgl
import torch
from torch import nn

from graphrec.graph.heterograph import IU, UI, build_heterograph
from graphrec.registry import register_block


def kept_count(n_edges: int, keep: float) -> int:
    """Edges a view keeps: ``floor(keep * n_edges)``, at least 1 when ``keep > 0`` and there are edges."""
    if n_edges == 0 or keep <= 0:
        return 0
    return min(n_edges, max(1, math.floor(keep * n_edges + 1e-9)))


def view_pairs(view: dgl.DGLGraph) -> torch.Tensor:
    """``(E', 2)`` CPU int64 (user, item) pairs of a view's ``ui`` edges, in edge-id order (the order
    :func:`view_from_pairs` rebuilds it in)."""
    users, items = view.edges(etype=UI)
    return torch.stack([users, items], dim=1).cpu()


def view_from_pairs(pairs: torch.Tensor, like: dgl.DGLGraph) -> dgl.DGLGraph:
    """The view of :meth:`EdgeDropout.forward` with the kept ``pairs`` (:func:`view_pairs`), on ``like``'s device."""
    return build_heterograph(like.num_nodes("user"), like.num_nodes("item"), pairs.cpu().numpy()).to(like.device)


@register_block("edge_dropout")
class EdgeDropout(nn.Module):
    """Uniform edge dropout (SGL-ED, Wu et al. SIGIR 2021): every interaction equally likely to stay."""

    relations = (UI, IU)

    def edge_logits(self, g: dgl.DGLGraph) -> torch.Tensor:
        """``(E,)`` log-probabilities (up to a constant) of keeping each ``ui`` edge."""
        return torch.zeros(g.num_edges(UI), device=g.device)

    def forward(self, g: dgl.DGLGraph, keep: float) -> dgl.DGLGraph:
        users, items = g.edges(etype=UI)
        n_keep = kept_count(len(users), keep)
        logits = self.edge_logits(g)
        gumbel = -torch.log(-torch.log(torch.rand(len(users), device=logits.device).clamp_min(1e-20)))
        idx = torch.topk(logits + gumbel, n_keep).indices
        pairs = torch.stack([users[idx], items[idx]], dim=1).cpu().numpy()
        return build_heterograph(g.num_nodes("user"), g.num_nodes("item"), pairs).to(g.device)


@register_block("degree_edge_pruning")
class DegreeSensitivePruning(EdgeDropout):
    """FREEDOM's degree-sensitive edge pruning (Zhou & Shen, MM 2023): edge ``(u, i)`` is kept with
    probability ``∝ 1/sqrt(d_u d_i)`` (the LightGCN weight ``w``), so edges between popular nodes
    are pruned first."""

    def edge_logits(self, g: dgl.DGLGraph) -> torch.Tensor:
        return torch.log(g.edges[UI].data["w"].clamp_min(1e-30))
