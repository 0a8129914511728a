"""Missing-modality generation: noise, feature generators and decoders (DGMRec eq. 10-15)."""

from __future__ import annotations

import torch
from torch import nn

from graphrec.blocks.encoders import xavier_linear
from graphrec.registry import register_block


def perturb(x: torch.Tensor, scale: float = 0.1) -> torch.Tensor:
    """Noise ν of spec 4.4(i): ``x + scale * sign(x) ⊙ ξ / ||ξ||₂`` with ``ξ ~ U[0,1)`` per row."""
    if scale == 0 or x.numel() == 0:
        return x
    xi = torch.rand_like(x)
    xi = xi.div_(xi.norm(dim=1, keepdim=True).clamp_min(1e-12))  # xi needs no gradient: in place
    # x + scale·sign(x)·ξ in one pass (may round once instead of twice: ≤ 1 ulp from the three-op form)
    return torch.addcmul(x, torch.sign(x), xi, value=scale)


@register_block("feature_generator")
class FeatureGenerator(nn.Module):
    """``Linear(d_in -> d) -> tanh -> Linear(d -> d)``: the general (Γᵍ) and specific (Γˢ) generators.

    Shapes: ``(n, d_in)`` -> ``(n, d)``.
    """

    relations = ()

    def __init__(self, d_in: int, d: int) -> None:
        super().__init__()
        self.net = nn.Sequential(xavier_linear(d_in, d), nn.Tanh(), xavier_linear(d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_block("modality_decoder")
class ModalityDecoder(nn.Module):
    """``Linear(2d -> d_m)`` from ``[general; specific]`` back to raw modality features.

    Shapes: ``(n, d), (n, d)`` -> ``(n, d_m)``.
    """

    relations = ()

    def __init__(self, d: int, d_out: int) -> None:
        super().__init__()
        self.linear = xavier_linear(2 * d, d_out)

    def forward(self, general: torch.Tensor, specific: torch.Tensor, noise: float = 0.0) -> torch.Tensor:
        return self.linear(perturb(torch.cat([general, specific], dim=1), noise))
