"""User modality preferences and the item preference gate (DGMRec eq. 2-3, spec 4.2 step 3)."""

from __future__ import annotations

import dgl
import torch

from graphrec.graph.spmm import u_mul_e_sum
from torch import nn

from graphrec.blocks.encoders import xavier_linear
from graphrec.graph.heterograph import UI
from graphrec.registry import register_block


@register_block("preference_gate")
class PreferenceGate(nn.Module):
    """``π_u^m = tanh(W_m e_u)`` and ``ρ_i^m`` = mean of ``π^m`` over the item's train users.

    ``W_m`` is a bias-free ``d x d`` map per modality applied to the (ego) user ID
    embedding. ``ρ`` is 0 for items with no train user (``w_mean`` = 1/(deg+1e-7)).

    Shapes: user embeddings ``(U, d)`` -> ``({m: (U, d)}, {m: (N, d)})`` (π, ρ).
    """

    relations = (UI,)

    def __init__(self, modalities: list[str], d: int) -> None:
        super().__init__()
        self.maps = nn.ModuleDict({m: xavier_linear(d, d, bias=False) for m in modalities})

    def forward(self, g: dgl.DGLGraph, user_emb: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        pi = {m: self.pi(user_emb, m) for m in self.maps}
        rho = {m: self.item_mean(g, p) for m, p in pi.items()}
        return pi, rho

    def pi(self, user_emb: torch.Tensor, modality: str) -> torch.Tensor:
        """``π^m = tanh(W_m e_u)`` of one modality, ``(U, d)``."""
        return torch.tanh(self.maps[modality](user_emb))

    @staticmethod
    def item_mean(g: dgl.DGLGraph, pi: torch.Tensor) -> torch.Tensor:
        """``(U, d)`` user rows -> ``(N, d)``: each item's mean over its train users (0 without any)."""
        return u_mul_e_sum(g, UI, pi, g.edges[UI].data["w_mean"])

    @staticmethod
    def gate(rho: dict[str, torch.Tensor], feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Element-wise ``ρ^m ⊙ x_m`` (no extra sigmoid, spec 9.1.7)."""
        return {m: rho[m] * x for m, x in feats.items()}
