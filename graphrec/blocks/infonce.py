"""InfoNCE as DGMRec uses it (spec 4.6)."""

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
