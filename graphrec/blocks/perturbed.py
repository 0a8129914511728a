"""LightGCN propagation with SimGCL's uniform noise added after every layer."""

from __future__ import annotations

import dgl
import torch
from torch import nn

from graphrec.blocks.generators import perturb
from graphrec.blocks.lightgcn import LightGCNConv
from graphrec.graph.heterograph import IU, UI
from graphrec.registry import register_block


@register_block("perturbed_lightgcn")
class PerturbedPropagation(nn.Module):
    """SimGCL's encoder (Yu et al., SIGIR 2022): ``E^l = Ã E^{l-1} + Δ^l``, output = mean of layers ``1..L``.

    With ``ego=True`` the mean runs over layers ``0..L`` (the DGMRec authors' re-implementation).

    ``Δ^l = eps · sign(E^l) ⊙ ξ/||ξ||₂`` row-wise, ``ξ ~ U[0, 1)`` (:func:`graphrec.blocks.generators.perturb`):
    every noise row has norm exactly ``eps`` and lies in the embedding's hyperoctant, so it rotates
    an embedding by a bounded angle. ``eps = 0`` is plain LightGCN without the ego layer.
    ``conv`` is one ``ui_conv`` layer (default :class:`LightGCNConv`).

    Shapes: ``(U, d), (N, d)`` -> ``(U, d), (N, d)``.
    """

    relations = (UI, IU)

    def __init__(self, n_layers: int = 2, conv: nn.Module | None = None, ego: bool = False) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.ego = ego
        self.conv = conv if conv is not None else LightGCNConv()

    def forward(self, g: dgl.DGLGraph, user: torch.Tensor, item: torch.Tensor, eps: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        h = {"user": user, "item": item}
        if self.n_layers == 0:
            return user, item
        acc_u, acc_i = (user, item) if self.ego else (torch.zeros_like(user), torch.zeros_like(item))
        for _ in range(self.n_layers):
            h = self.conv(g, h)
            if eps:
                h = {k: perturb(v, eps) for k, v in h.items()}
            acc_u = acc_u + h["user"]
            acc_i = acc_i + h["item"]
        n = self.n_layers + int(self.ego)
        return acc_u / n, acc_i / n
