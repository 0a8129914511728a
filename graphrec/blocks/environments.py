"""Modality-mixing environments of MILK (Bai et al., SIGIR 2024): cyclic mixup of modality
representations with Dirichlet weights, the masked mixture they feed, and the invariance penalty.

For ``M`` modalities, every draw gives ``M + 1`` environments (rows of a ``(M + 1, M)`` weight matrix):

    w^0 = (1/M, …, 1/M)                          the uniform (inference) mixture
    λ ~ Dirichlet(α, …, α),   w^k = roll(λ, k - 1),  k = 1..M   (cyclic shifts: every modality takes every weight)

An item's representation in environment ``e`` is the weighted mixture of its modality
representations (:func:`mix_modalities`); a model trained on all environments with the variance
of their losses as a penalty (:func:`invariance_penalty`, V-REx style) learns user preferences that
do not depend on which modality an item shows, so an item missing some is still ranked sensibly.
"""

from __future__ import annotations

import torch
from torch import nn

from graphrec.registry import register_block


def mix_modalities(reps: torch.Tensor, weights: torch.Tensor, available: torch.Tensor | None = None) -> torch.Tensor:
    """``Σ_m w_m a_m r_m / Σ_m w_m a_m`` per row (the mixture over the modalities the row has).

    Args:
        reps: ``(n, M, d)`` modality representations.
        weights: ``(M,)`` or ``(n, M)`` non-negative weights.
        available: ``(n, M)`` bool, or ``None`` (all available: the plain weighted sum ``Σ_m w_m r_m``).
            A row with no available modality (or zero total weight) falls back to ``Σ_m w_m r_m``.
    Returns ``(n, d)``.
    """
    w = weights.to(reps.dtype).expand(reps.shape[0], reps.shape[1])
    plain = (w.unsqueeze(-1) * reps).sum(1)
    if available is None:
        return plain
    wa = w * available.to(reps.dtype)
    total = wa.sum(1, keepdim=True)
    total_w = w.sum(1, keepdim=True)
    masked = (wa.unsqueeze(-1) * reps).sum(1) * (total_w / total.clamp_min(1e-12))  # rescaled to the weights' total
    return torch.where(total > 0, masked, plain)


def invariance_penalty(losses: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of the ``(E,)`` environment losses (0 for a single environment)."""
    return losses.var() if losses.numel() > 1 else losses.sum() * 0.0


@register_block("cyclic_mixup")
class CyclicMixup(nn.Module):
    """MILK's environments: ``forward()`` draws ``λ ~ Dirichlet(alpha)`` and returns the ``(M + 1, M)``
    weights ``[uniform; roll(λ, 0); …; roll(λ, M - 1)]`` (rows sum to 1), drawn with torch's RNG
    (seeded by graphrec's ``seed``, saved by ``--resume``). No parameters.
    """

    relations = ()

    def __init__(self, modalities: list[str], alpha: float = 0.2) -> None:
        super().__init__()
        self.n = len(modalities)
        self.alpha = float(alpha)

    def forward(self) -> torch.Tensor:
        lam = torch.distributions.Dirichlet(torch.full((self.n,), self.alpha)).sample()
        return torch.stack([torch.full((self.n,), 1.0 / self.n)] + [torch.roll(lam, k) for k in range(self.n)])

    def extra_repr(self) -> str:
        return f"n_modalities={self.n}, alpha={self.alpha}"
