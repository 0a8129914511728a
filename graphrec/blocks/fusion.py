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
        return self.combine(ids, sum(general.values()), sum(specific.values()), len(general))

    @staticmethod
    def combine(ids: torch.Tensor, general_sum: torch.Tensor, specific_sum: torch.Tensor, m: int) -> torch.Tensor:
        """:meth:`forward` from the modality sums ``Σ_m G_m``, ``Σ_m S_m`` over ``m`` modalities (the same
        values, so that a caller can add one modality at a time and drop it)."""
        return ids + (general_sum / m + specific_sum) / (m + 1)
