"""Attention-weighted user-item edges (GRCN, Wei et al., ACM MM 2020, eq. 1-7).

* :class:`AffinityAttention`: GRCN's parameter-free graph attention on the user-item relations. For an
  edge ``s -> t`` the affinity is ``<h_s, h_t>``; ``α_e = softmax`` over the in-edges of ``t``
  (:func:`graphrec.graph.spmm.edge_softmax`), and ``out_t = Σ_{e = s -> t} α_e h_s``. It returns the
  ``α`` of every edge, which a model can turn into weights of the user-item graph (GRCN prunes with them).
* :class:`EdgeWeightedConv`: one propagation step over the user-item relations with given per-edge
  weights, ``out_t = Σ_{e = s -> t} w_e h_s`` (a LightGCN layer whose weights come from elsewhere).
"""

from __future__ import annotations

import dgl
import torch
from torch import nn

from graphrec.graph.heterograph import IU, UI
from graphrec.graph.spmm import edge_dot, edge_softmax, torch_u_mul_e_sum
from graphrec.registry import register_block

_ENDS = {UI: ("user", "item"), IU: ("item", "user")}


@register_block("affinity_attention")
class AffinityAttention(nn.Module):
    """Dot-product attention over ``ui`` (users -> items) and/or ``iu`` (items -> users); no parameters.

    Shapes: ``forward(g, {'user': (U, d), 'item': (N, d)}, relations=(UI, IU))`` ->
    ``({'user': (U, d), 'item': (N, d)}, {relation: α (E,)})``; a node type that receives no relation
    gets zeros, a node without in-edges gets 0.
    """

    relations = (UI, IU)

    def forward(self, g: dgl.DGLGraph, feats: dict[str, torch.Tensor], relations=(UI, IU)) -> tuple[dict[str, torch.Tensor], dict]:
        out = {k: torch.zeros_like(v) for k, v in feats.items()}
        alphas = {}
        for rel in relations:
            s, t = _ENDS[rel]
            alpha = edge_softmax(g, rel, edge_dot(g, rel, feats[s], feats[t]))
            out[t] = out[t] + torch_u_mul_e_sum(g, rel, feats[s], alpha)
            alphas[rel] = alpha
        return out, alphas


@register_block("edge_weighted_conv")
class EdgeWeightedConv(nn.Module):
    """``out_t = Σ_{e = s -> t} w_e h_s`` on ``ui`` and ``iu`` with weights ``{UI: (E,), IU: (E,)}``
    (differentiable in both). Shapes: ``{'user': (U, d), 'item': (N, d)}`` -> the same."""

    relations = (UI, IU)

    def forward(self, g: dgl.DGLGraph, feats: dict[str, torch.Tensor], weights: dict) -> dict[str, torch.Tensor]:
        return {
            "item": torch_u_mul_e_sum(g, UI, feats["user"], weights[UI]),
            "user": torch_u_mul_e_sum(g, IU, feats["item"], weights[IU]),
        }
