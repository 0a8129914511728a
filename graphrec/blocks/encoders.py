"""DGMRec's disentangling encoders (paper eq. 1, spec 4.2 step 2).

* :class:`GeneralEncoder`: per-modality projection ``P_m`` (d_m -> d) followed by one
  encoder ``S`` shared by all modalities: ``g_m = σ(S tanh(P_m x_m))``.
* :class:`SpecificEncoder`: one layer per modality: ``s_m = σ(Q_m x_m)``.
"""

from __future__ import annotations

import torch
from torch import nn

from graphrec.registry import register_block


def xavier_linear(d_in: int, d_out: int, bias: bool = True) -> nn.Linear:
    """A ``Linear`` with xavier-uniform weight and PyTorch's default bias init (spec 4.1)."""
    layer = nn.Linear(d_in, d_out, bias=bias)
    nn.init.xavier_uniform_(layer.weight)
    return layer


@register_block("general_encoder")
class GeneralEncoder(nn.Module):
    """Modality-shared ("general") encoder.

    Shapes: ``{m: (N, d_m)}`` -> ``{m: (N, d)}``, values in (0, 1).
    """

    relations = ()

    def __init__(self, dims: dict[str, int], d: int) -> None:
        super().__init__()
        self.projections = nn.ModuleDict({m: xavier_linear(dm, d) for m, dm in dims.items()})
        self.shared = xavier_linear(d, d)

    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: torch.sigmoid(self.shared(torch.tanh(self.projections[m](x)))) for m, x in feats.items()}


@register_block("specific_encoder")
class SpecificEncoder(nn.Module):
    """Modality-specific encoder, one linear layer per modality.

    Shapes: ``{m: (N, d_m)}`` -> ``{m: (N, d)}``, values in (0, 1).
    """

    relations = ()

    def __init__(self, dims: dict[str, int], d: int) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict({m: xavier_linear(dm, d) for m, dm in dims.items()})

    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: torch.sigmoid(self.encoders[m](x)) for m, x in feats.items()}
