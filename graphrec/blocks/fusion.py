"""Fusion of ID embeddings with modality representations (DGMRec eq. 17-18, spec 4.2 step 6)."""

from __future__ import annotations

import torch
from torch import nn

from graphrec.registry import register_block


@register_block("modality_fusion")
class ModalityFusion(nn.Module):
    """``z = e + (mean_m G_m + Σ_m S_m) / (M + 1)``.

    Shapes: ID ``(n, d)``, ``{m: (n, d)}`` general and specific -> ``(n, d)``.
    """

    relations = ()

    def forward(self, ids: torch.Tensor, general: dict[str, torch.Tensor], specific: dict[str, torch.Tensor]) -> torch.Tensor:
        if not general:
            return ids
        m = len(general)
        g = sum(general.values()) / m
        s = sum(specific.values())
        return ids + (g + s) / (m + 1)
