"""MGCN's behaviour-guided purifier and behaviour-aware fuser (Yu et al., ACM MM 2023, eq. 1 and 6-9)."""

from __future__ import annotations

import torch
from torch import nn

from graphrec.blocks.encoders import xavier_linear
from graphrec.registry import register_block


def _sigmoid_gate(d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, d), nn.Sigmoid())


@register_block("behavior_purifier")
class BehaviorPurifier(nn.Module):
    """MGCN's behaviour-guided purifier: modality features gating the item ID embedding (eq. 1).

    ``x̃_m = e_i ⊙ σ(W_g (P_m x_m + b_m) + b_g)``, one projection ``P_m: d_m -> d`` and one gate per modality.

    Shapes: ``e_i (N, d)``, ``{m: (N, d_m)}`` -> ``{m: (N, d)}``.
    """

    relations = ()

    def __init__(self, widths: dict[str, int], d: int) -> None:
        super().__init__()
        self.projections = nn.ModuleDict({m: xavier_linear(w, d) for m, w in widths.items()})
        self.gates = nn.ModuleDict({m: _sigmoid_gate(d) for m in widths})

    def forward(self, item_emb: torch.Tensor, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: item_emb * self.gates[m](self.projections[m](x)) for m, x in feats.items()}


@register_block("behavior_fuser")
class BehaviorFuser(nn.Module):
    """MGCN's behaviour-aware fuser: attention-weighted common part plus preference-gated specific parts.

    MGCN eq. 6-9 for ``M`` modalities. With ``E_m`` the modality views and ``E`` the ID (user-item) view:

        α = softmax_m(q(E_m)),  q = Linear(d, d) → tanh → Linear(d, 1, no bias)    (attention over modalities)
        C = Σ_m α_m E_m                                                           (common part)
        S = (Σ_m σ(W_m E + b_m) ⊙ (E_m − C) + C) / (M + 1)                        (preference-gated specific parts)

    Shapes: ``{m: (n, d)}``, ``(n, d)`` -> ``(n, d)`` (the side representation ``S``).
    """

    relations = ()

    def __init__(self, modalities: list[str], d: int) -> None:
        super().__init__()
        self.query = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))
        self.preferences = nn.ModuleDict({m: _sigmoid_gate(d) for m in modalities})

    def forward(self, views: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
        mods = list(views)
        stacked = torch.stack([views[m] for m in mods], dim=1)  # (n, M, d)
        alpha = torch.softmax(self.query(stacked).squeeze(-1), dim=1)  # (n, M)
        common = (alpha.unsqueeze(-1) * stacked).sum(dim=1)
        specific = sum(self.preferences[m](ids) * (views[m] - common) for m in mods)
        return (specific + common) / (len(mods) + 1)
