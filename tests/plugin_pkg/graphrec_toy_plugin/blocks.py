"""A user-item layer (slot ``ui_conv``) with a learnable per-dimension scale.

Not decorated: the entry point ``toy_ui_conv = graphrec_toy_plugin.blocks:ToyUIConv``
registers the class.
"""

from __future__ import annotations

import dgl
import dgl.ops
import torch
from torch import nn


class ToyUIConv(nn.Module):
    """LightGCN layer times a learnable per-dimension scale (toy plugin)."""

    relations = (("user", "ui", "item"), ("item", "iu", "user"))

    def __init__(self, d: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(d))

    def forward(self, g: dgl.DGLGraph, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            "item": dgl.ops.u_mul_e_sum(g["ui"], feats["user"], g.edges["ui"].data["w"]) * self.scale,
            "user": dgl.ops.u_mul_e_sum(g["iu"], feats["item"], g.edges["iu"].data["w"]) * self.scale,
        }
