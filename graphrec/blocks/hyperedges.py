"""Learnable hyperedges of LGMRec (Guo et al., AAAI 2024, eq. 6-8): soft item/user-to-hyperedge
assignments computed from raw modality features, and message passing through the hyperedges.

With ``x (N, d_m)`` the item features of one modality and ``V (d_m, K)`` the ``K`` learnable
hyperedge embeddings (stored as columns):

    H_i = x V                      (N, K)   item-hyperedge logits
    H_u = A H_i                    (U, K)   user logits: sum over the user's train items (A = interactions)
    H̃ = softmax_row((H + g) / τ)           Gumbel-softmax, g ~ Gumbel(0, 1), in training;
                                             softmax(H / τ) without noise in evaluation
    E_i^{h+1} = D(H̃_i) D(H̃_i)ᵀ E_i^h,   E_u = D(H̃_u) D(H̃_i)ᵀ E_i^{last}   (D: dropout, keep rate ``keep_rate``)

Every assignment row is a distribution over the ``K`` hyperedges (rows sum to 1 before dropout).
Cost ``O((U + N)·K·d)``; the ``N×N`` matrix ``H̃ H̃ᵀ`` is never formed.
"""

from __future__ import annotations

import dgl
import torch
import torch.nn.functional as F
from torch import nn

from graphrec.graph.heterograph import IU
from graphrec.graph.spmm import u_mul_e_sum
from graphrec.registry import register_block


def hyperedge_propagate(item_assign: torch.Tensor, user_assign: torch.Tensor, item_emb: torch.Tensor, n_layers: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_layers`` steps ``E_i <- H_i (H_iᵀ E_i)``; users read the last step's hyperedges, ``E_u = H_u (H_iᵀ E_i)``.

    Shapes: ``item_assign (N, K)``, ``user_assign (U, K)``, ``item_emb (N, d)`` -> ``(U, d), (N, d)``.
    """
    if n_layers < 1:
        raise ValueError("hyperedge_propagate needs n_layers >= 1")
    h = item_emb
    for _ in range(n_layers):
        edge = item_assign.T @ h  # (K, d): every hyperedge's message
        user = user_assign @ edge
        h = item_assign @ edge
    return user, h


@register_block("learnable_hyperedges")
class LearnableHyperedges(nn.Module):
    """LGMRec's hyperedges of one modality: ``V (d_m, K)`` (xavier-uniform, as the authors) and the
    assignments and propagation above.

    Args:
        width: ``d_m``, the modality's feature width.
        n_hyperedges: ``K``.
        tau: Gumbel-softmax temperature ``τ``.
        keep_rate: dropout keep rate on the assignment matrices (training only; 1 = no dropout).

    Reads relation ``iu`` (the user logits sum over a user's train items).
    Shapes: :meth:`assignments` ``x (N, d_m)`` -> ``(U, K), (N, K)``;
    ``forward(g, x, item_emb (N, d), n_layers)`` -> ``(U, d), (N, d)``.
    """

    relations = (IU,)

    def __init__(self, width: int, n_hyperedges: int = 4, tau: float = 0.2, keep_rate: float = 0.5) -> None:
        super().__init__()
        self.hyperedges = nn.Parameter(nn.init.xavier_uniform_(torch.empty(width, n_hyperedges)))
        self.tau = float(tau)
        self.dropout = nn.Dropout(1.0 - float(keep_rate))
        self._ones: torch.Tensor | None = None

    def logits(self, g: dgl.DGLGraph, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U, K), (N, K)``: ``H_u = A x V`` and ``H_i = x V``."""
        item = x @ self.hyperedges
        n = g.num_edges(IU)
        if self._ones is None or self._ones.shape[0] != n:
            self._ones = torch.ones(n)  # one tensor kept, so the sparse matrix of A is built once
        return u_mul_e_sum(g, IU, item, self._ones), item

    def assignments(self, g: dgl.DGLGraph, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U, K), (N, K)`` soft assignments, rows summing to 1 (Gumbel noise only in training)."""
        user, item = self.logits(g, x)
        if self.training:
            return F.gumbel_softmax(user, tau=self.tau, dim=1), F.gumbel_softmax(item, tau=self.tau, dim=1)
        return torch.softmax(user / self.tau, dim=1), torch.softmax(item / self.tau, dim=1)

    def forward(self, g: dgl.DGLGraph, x: torch.Tensor, item_emb: torch.Tensor, n_layers: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        user, item = self.assignments(g, x)
        return hyperedge_propagate(self.dropout(item), self.dropout(user), item_emb, n_layers)

    def extra_repr(self) -> str:
        d, k = self.hyperedges.shape
        return f"width={d}, n_hyperedges={k}, tau={self.tau}, keep_rate={1 - self.dropout.p:g}"
