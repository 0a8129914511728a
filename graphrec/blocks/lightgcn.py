"""LightGCN propagation on the user-item relations of the heterograph (spec 2.5)."""

from __future__ import annotations

import dgl
import torch

from graphrec.graph.spmm import u_mul_e_sum
from torch import nn

from graphrec.graph.heterograph import IU, UI
from graphrec.registry import register_block


@register_block("lightgcn_conv")
class LightGCNConv(nn.Module):
    """One weight-free LightGCN layer: ``h_i' = Σ_u w_ui h_u``, ``h_u' = Σ_i w_iu h_i``.

    Reads relations ``ui`` and ``iu`` and the edge weight ``edata[weight]`` (``w`` =
    symmetric normalisation, ``w_mean`` = mean aggregation).

    Shapes: ``feats = {'user': (U, d), 'item': (N, d)}`` -> same shapes.
    """

    relations = (UI, IU)

    def __init__(self, weight: str = "w") -> None:
        super().__init__()
        self.weight = weight

    def forward(self, g: dgl.DGLGraph, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            "item": u_mul_e_sum(g, UI, feats["user"], g.edges[UI].data[self.weight]),
            "user": u_mul_e_sum(g, IU, feats["item"], g.edges[IU].data[self.weight]),
        }

    def extra_repr(self) -> str:
        return f"weight={self.weight!r}"


@register_block("lightgcn_mean_conv")
class LightGCNMeanConv(LightGCNConv):
    """A LightGCN layer with mean aggregation ``D^-1 A`` (edge weight ``w_mean``), CI2MG's ID graph.

    ``graphrec fit lightgcn --set ui_block=lightgcn_mean_conv`` is CI2MG's ID branch (spec
    9.2.1) trained on its own. Shapes: as :class:`LightGCNConv`.
    """

    def __init__(self) -> None:
        super().__init__("w_mean")


@register_block("lightgcn")
class LightGCNPropagation(nn.Module):
    """``n_layers`` LightGCN layers; output = mean of layers ``0..L`` (L+1 terms).

    Shapes: ``(U, d), (N, d)`` ego embeddings -> ``(U, d), (N, d)``. Nodes with no
    train edge get ``E / (L+1)``.
    """

    relations = (UI, IU)

    def __init__(self, n_layers: int = 3, weight: str = "w", conv: nn.Module | None = None) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.conv = conv if conv is not None else LightGCNConv(weight)

    def forward(self, g: dgl.DGLGraph, user: torch.Tensor, item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = {"user": user, "item": item}
        acc_u, acc_i = user, item
        for _ in range(self.n_layers):
            h = self.conv(g, h)
            acc_u = acc_u + h["user"]
            acc_i = acc_i + h["item"]
        scale = 1.0 / (self.n_layers + 1)
        return acc_u * scale, acc_i * scale
