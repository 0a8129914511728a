"""Content-to-representation head for items without interactions (``dgmrec_cold``).

A two-layer MLP from an item's modality encodings to the space of the model's final item
representation: ``c_i = W_2 tanh(W_1 [g_{i,m}; s_{i,m}]_m + b_1) + b_2``.
"""

from __future__ import annotations

import torch
from torch import nn

from graphrec.blocks.encoders import xavier_linear
from graphrec.registry import register_block


@register_block("content_head")
class ContentHead(nn.Module):
    """Shapes: ``(n, d_in)`` -> ``(n, d)``; ``d_in`` = 2 x modalities x d for DGMRec's encodings."""

    relations = ()

    def __init__(self, d_in: int, d: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(xavier_linear(d_in, hidden), nn.Tanh(), xavier_linear(hidden, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
