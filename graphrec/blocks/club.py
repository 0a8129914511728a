"""CLUB: a contrastive log-ratio upper bound of mutual information (DGMRec eq. 7, spec 4.5).

The estimator models ``q(y | x)`` as a Gaussian with mean ``μ(x)`` and log-variance
``λ(x) ∈ (-1, 1)``. It is fitted by maximum likelihood (:meth:`CLUB.learning_loss`,
its own optimiser) and, frozen, gives the bound minimised by the model
(:meth:`CLUB.forward`).
"""

from __future__ import annotations

import torch
from torch import nn

from graphrec.registry import register_block


@register_block("club")
class CLUB(nn.Module):
    """CLUB estimator for ``x, y ∈ R^d`` with hidden width ``hidden // 2``.

    Shapes: ``x, y: (n, d)`` -> scalar.
    """

    relations = ()

    def __init__(self, x_dim: int = 64, y_dim: int = 64, hidden: int = 64) -> None:
        super().__init__()
        h = hidden // 2
        self.mu = nn.Sequential(nn.Linear(x_dim, h), nn.ReLU(), nn.Linear(h, y_dim))
        self.logvar = nn.Sequential(nn.Linear(x_dim, h), nn.ReLU(), nn.Linear(h, y_dim), nn.Tanh())

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Upper bound ``½ mean_i [Σ_k -(μ-y_i)²/e^λ - Σ_k -(μ-y_π(i))²/e^λ]`` with a random permutation π."""
        if x.shape[0] == 0:
            return x.sum() * 0.0
        mu, logvar = self.mu(x), self.logvar(x)
        var = logvar.exp()
        positive = -((mu - y) ** 2) / var
        perm = torch.randperm(y.shape[0], device=y.device)
        negative = -((mu - y[perm]) ** 2) / var
        return 0.5 * (positive.sum(dim=1) - negative.sum(dim=1)).mean()

    def log_likelihood(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.mu(x), self.logvar(x)
        return (-((mu - y) ** 2) / logvar.exp() - logvar).sum(dim=1).mean()

    def learning_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood the estimator minimises (``ℓ_est``)."""
        return -self.log_likelihood(x, y)
