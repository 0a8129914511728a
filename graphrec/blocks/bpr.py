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


def batch_bpr(user: torch.Tensor, item: torch.Tensor, batch) -> torch.Tensor:
    """:func:`bpr_loss` of a :class:`~graphrec.data.sampler.BPRBatch` scored with dot products of
    ``(U, d)`` user and ``(N, d)`` item representations."""
    u = user[batch.users]
    return bpr_loss((u * item[batch.pos]).sum(1), (u * item[batch.neg]).sum(1))


def batch_l2(user_emb: torch.Tensor, item_emb: torch.Tensor, batch) -> torch.Tensor:
    """:func:`l2_reg` of a batch's ego embeddings (its users, positives and negatives)."""
    return l2_reg(user_emb[batch.users], item_emb[batch.pos], item_emb[batch.neg])
