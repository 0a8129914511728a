"""NGCF's embedding-propagation layer (Wang et al., SIGIR 2019, eq. 7)."""

from __future__ import annotations

import dgl
import torch
import torch.nn.functional as F
from torch import nn

from graphrec.blocks.encoders import xavier_linear
from graphrec.blocks.lightgcn import LightGCNConv
from graphrec.graph.heterograph import IU, UI
from graphrec.registry import register_block


@register_block("ngcf_conv")
class NGCFConv(nn.Module):
    """One NGCF layer: ``E' = LeakyReLU((L + I) E W1 + (L E ⊙ E) W2)``, then message dropout.

    ``L E`` is one :class:`LightGCNConv` step (``L = D^-1/2 A D^-1/2``); ``W1``, ``W2`` are
    ``d x d`` with bias (the authors' code), LeakyReLU slope 0.2. Fits the ``ui_conv`` slot; a
    model stacks one instance per layer (each with its own weights).

    Shapes: ``{'user': (U, d), 'item': (N, d)}`` -> same shapes.
    """

    relations = (UI, IU)

    def __init__(self, d: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.propagate = LightGCNConv()
        self.w1 = xavier_linear(d, d)
        self.w2 = xavier_linear(d, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, g: dgl.DGLGraph, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        side = self.propagate(g, feats)
        return {
            k: self.dropout(F.leaky_relu(self.w1(side[k] + h) + self.w2(side[k] * h), 0.2)) for k, h in feats.items()
        }
