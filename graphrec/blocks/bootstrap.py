"""Bootstrap (BYOL-style) alignment without negatives, as in BM3 (Zhou et al., WWW 2023)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from graphrec.registry import register_block


@register_block("bootstrap_alignment")
class BootstrapAlignment(nn.Module):
    """BM3's bootstrap: an online predictor and a stop-gradient dropout target, cosine distance.

    An online predictor ``p`` (``Linear(d, d)``, xavier-normal weight) and a stop-gradient target.

    * :meth:`target`: ``dropout(x)`` of a detached copy (BM3's latent-embedding dropout view);
    * :meth:`forward`: ``p(x)``, the online view;
    * :meth:`distance`: ``1 - mean_i cos(online_i, target_i)``; no gradient reaches the target.

    Shapes: ``(n, d)`` -> ``(n, d)``; ``distance`` -> scalar.
    """

    relations = ()

    def __init__(self, d: int, dropout: float = 0.3) -> None:
        super().__init__()
        self.predictor = nn.Linear(d, d)
        nn.init.xavier_normal_(self.predictor.weight)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(x)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return F.dropout(x.detach(), self.dropout, training=True)

    @staticmethod
    def distance(online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1.0 - F.cosine_similarity(online, target.detach(), dim=-1).mean()
