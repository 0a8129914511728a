"""InfoNCE as DGMRec uses it (spec 4.6), and the two-view user/item contrast of SGL and SimGCL."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def infonce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """One-directional InfoNCE between row-aligned ``a`` and ``b`` (``(n, d)`` each).

    Rows are L2-normalised; ``s_ij = <a_i, b_j>``; loss = ``mean_i -log softmax_j(s_ij / τ)[i]``.
    The positive is in the denominator, every other row is a negative (duplicates are kept).
    An empty input gives 0 (spec 9.3), not NaN.
    """
    if a.shape[0] == 0:
        return a.sum() * 0.0
    a = F.normalize(a, dim=1) / temperature  # scale the (n, d) side, not the (n, n) logits
    b = F.normalize(b, dim=1)
    logits = a @ b.T
    return F.cross_entropy(logits, torch.arange(a.shape[0], device=a.device))


def contrast_views(u1: torch.Tensor, i1: torch.Tensor, u2: torch.Tensor, i2: torch.Tensor, batch, temp: float) -> torch.Tensor:
    """InfoNCE between two views of the batch's distinct users plus that of its distinct positive items
    (SGL eq. 9-10, SimGCL eq. 3). Shapes: ``(U, d), (N, d)`` per view -> scalar."""
    users, items = torch.unique(batch.users), torch.unique(batch.pos)
    return infonce(u1[users], u2[users], temp) + infonce(i1[items], i2[items], temp)
