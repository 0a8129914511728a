"""Prototype hypergraph convolution of CI2MG (eq. 3-5, spec 5.2 steps 4-5).

Every modality has ``K`` learnable prototypes that act as hyperedges. An item belongs
to each hyperedge with the (signed) cosine similarity between its feature and the
prototype; one convolution step is

    R Q = D_v^{-1} H Θ D_e^{-1} Hᵀ Q,      H ∈ ℝ^{N×K}, Θ ∈ ℝ^{K×K},

with ``D_v`` = row sums of ``H`` and ``D_e`` = column sums of ``H`` (only exact zeros
replaced by 1, as in the authors' code; negative or tiny sums are kept). It is
evaluated right to left, ``D_v^{-1}(H(Θ(D_e^{-1}(Hᵀ Q))))``, which costs
``O(N·K·d)`` time and never forms the ``N×N`` matrix ``R``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from graphrec.registry import register_block


def prototype_membership(x: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Soft membership ``H = norm(x) norm(C)ᵀ`` (cosine, in [-1, 1]; zero rows give 0).

    Shapes: ``x (N, d)``, ``prototypes (K, d)`` -> ``(N, K)``.
    """
    return F.normalize(x, dim=1) @ F.normalize(prototypes, dim=1).T


def _safe_inverse(s: torch.Tensor) -> torch.Tensor:
    """``1 / s`` with only exact zeros replaced by 1 (spec 5.2 step 5)."""
    return 1.0 / torch.where(s == 0, torch.ones_like(s), s)


def hypergraph_conv(h: torch.Tensor, theta: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """One associative hypergraph step ``D_v^{-1} H Θ D_e^{-1} Hᵀ q`` (no activation).

    Shapes: ``h (N, K)``, ``theta (K, K)``, ``q (N, d)`` -> ``(N, d)``; ``O(N·K·d)``.
    """
    inv_v = _safe_inverse(h.sum(dim=1))  # (N,)
    inv_e = _safe_inverse(h.sum(dim=0))  # (K,)
    edge = inv_e.unsqueeze(1) * (h.T @ q)  # (K, d)  D_e^{-1} Hᵀ q
    edge = theta @ edge  # (K, d)
    return inv_v.unsqueeze(1) * (h @ edge)  # (N, d)


def dense_hypergraph_matrix(h: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Reference ``R = D_v^{-1} H Θ D_e^{-1} Hᵀ`` as a dense ``(N, N)`` matrix (tests only; O(N²))."""
    dv = torch.diag(_safe_inverse(h.sum(dim=1)))
    de = torch.diag(_safe_inverse(h.sum(dim=0)))
    return dv @ h @ theta @ de @ h.T


@register_block("hypergraph_prototype_conv")
class HypergraphPrototypeConv(nn.Module):
    """CI2MG's prototype hypergraph convolution for one modality (eq. 3-5).

    Parameters: ``prototypes`` ``C (K, d)`` (xavier-uniform) and ``theta``
    ``Θ (K, K)`` (PyTorch ``Linear`` default, kaiming-uniform). ``H = norm(x) norm(C)ᵀ``
    is computed once from the input; then ``Q^{(0)} = x``,
    ``Q^{(l+1)} = σ(R Q^{(l)})`` for ``n_layers`` layers (σ = sigmoid by default) and
    the last layer is returned. Items whose input row is zero get ``σ(0)`` (0.5).

    Shapes: ``x (N, d)`` -> ``(N, d)``. Reads no graph relation (the hypergraph is
    the dense item-prototype membership).
    """

    relations = ()

    def __init__(self, dim: int, n_prototypes: int = 64, n_layers: int = 2, activation=torch.sigmoid) -> None:
        super().__init__()
        self.n_layers = int(n_layers)
        self.activation = activation
        self.prototypes = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_prototypes, dim)))
        self.theta = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(n_prototypes, n_prototypes), a=math.sqrt(5)))

    def membership(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` cosine membership of the items in the prototypes."""
        return prototype_membership(x, self.prototypes)

    def forward(self, x: torch.Tensor, membership: torch.Tensor | None = None) -> torch.Tensor:
        h = self.membership(x) if membership is None else membership
        q = x
        for _ in range(self.n_layers):
            q = hypergraph_conv(h, self.theta, q)
            if self.activation is not None:
                q = self.activation(q)
        return q

    def extra_repr(self) -> str:
        k, d = self.prototypes.shape
        return f"dim={d}, n_prototypes={k}, n_layers={self.n_layers}"
