"""A LightGCN layer on GUME's enhanced user-item graph (:mod:`graphrec.graph.enhanced`)."""

from __future__ import annotations

import dgl
import torch
from torch import nn

from graphrec.graph.heterograph import IU, UI
from graphrec.graph.spmm import u_mul_e_sum
from graphrec.registry import register_block


@register_block("enhanced_conv")
class EnhancedConv(nn.Module):
    """``h' = Â h`` with ``Â = D^-1/2 [[0, R], [Rᵀ, S]] D^-1/2``: users from their items, items from their
    users and from their shared-neighbour items (relation ``knn_enhanced``).

    Reads ``ui``/``iu`` with ``edata['w_enh']`` and ``knn_enhanced`` with ``edata['w']`` (a ``ui_conv`` slot
    block; the model's graph must come from :func:`graphrec.graph.enhanced.enhanced_graph`).
    Shapes: ``{'user': (U, d), 'item': (N, d)}`` -> the same.
    """

    relations = (UI, IU, ("item", "knn_enhanced", "item"))

    def forward(self, g: dgl.DGLGraph, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        rel = ("item", "knn_enhanced", "item")
        item = u_mul_e_sum(g, UI, feats["user"], g.edges[UI].data["w_enh"])
        if g.num_edges(rel):
            item = item + u_mul_e_sum(g, rel, feats["item"], g.edges[rel].data["w"])
        return {"item": item, "user": u_mul_e_sum(g, IU, feats["item"], g.edges[IU].data["w_enh"])}
