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
        w = g.edges[UI].data["w_mean"]
        pi = {m: torch.tanh(f(user_emb)) for m, f in self.maps.items()}
        rho = {m: u_mul_e_sum(g, UI, p, w) for m, p in pi.items()}
        return pi, rho

    @staticmethod
    def gate(rho: dict[str, torch.Tensor], feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Element-wise ``ρ^m ⊙ x_m`` (no extra sigmoid, spec 9.1.7)."""
        return {m: rho[m] * x for m, x in feats.items()}
