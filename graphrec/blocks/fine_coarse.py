"""SLMRec's fine-and-coarse (FAC) self-supervised modality contrast (Tao et al., IEEE TMM 2022, sec. III-C).

Modalities are aligned with the ID view one level at a time, each level coarser than the last: with
``z_0`` the ID-graph item embeddings and ``y_m`` modality ``m``'s graph embeddings, for the modalities
in order ``m_1, …, m_M``:

    z_k = C_k z_{k-1}         (the chain: every level is a map of the previous one)
    L_k = InfoNCE_τ(z_k, H_k y_{m_k})   over the rows that observe m_k (logits <a, b> / τ, not normalised)
    L_FAC = Σ_k L_k

(``C_k``, ``H_k``: ``d × d`` linear maps, xavier-uniform weights.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from graphrec.blocks.encoders import xavier_linear
from graphrec.registry import register_block


def dot_infonce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE with raw dot-product logits: ``mean_k -log softmax_j(<a_k, b_j> / τ)[k]`` (0 for no rows)."""
    if a.shape[0] == 0:
        return (a.sum() + b.sum()) * 0.0
    logits = a @ b.T / temperature
    return F.cross_entropy(logits, torch.arange(a.shape[0], device=a.device))


@register_block("fine_coarse_contrast")
class FineCoarseContrast(nn.Module):
    """The FAC loss above for ``modalities`` (in that order) at width ``d``.

    Shapes: ``forward(z0 (n, d), {m: (n, d)}, observed {m: (n,) bool} | None, τ)`` -> scalar.
    """

    relations = ()

    def __init__(self, modalities: list[str], d: int) -> None:
        super().__init__()
        self.order = list(modalities)
        self.chain = nn.ModuleDict({m: xavier_linear(d, d) for m in self.order})
        self.heads = nn.ModuleDict({m: xavier_linear(d, d) for m in self.order})

    def forward(self, z0: torch.Tensor, views: dict[str, torch.Tensor], observed: dict[str, torch.Tensor] | None, temperature: float) -> torch.Tensor:
        z, total = z0, z0.new_zeros(())
        for m in self.order:
            z = self.chain[m](z)
            rows = slice(None) if observed is None else observed[m]
            total = total + dot_infonce(z[rows], self.heads[m](views[m])[rows], temperature)
        return total
