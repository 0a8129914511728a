"""Bayesian personalised ranking loss and the L2 regulariser beside it."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """``-mean log σ(pos - neg)`` over ``(B,)`` scores (computed stably with ``logsigmoid``)."""
    return -F.logsigmoid(pos_scores - neg_scores).mean()


def l2_reg(*tensors: torch.Tensor) -> torch.Tensor:
    """``Σ ||t||² / 2 / B`` over ``(B, d)`` tensors (the LightGCN/MF-BPR embedding regulariser)."""
    b = tensors[0].shape[0]
    return sum(t.pow(2).sum() for t in tensors) / 2.0 / max(b, 1)
