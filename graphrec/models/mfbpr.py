"""MF-BPR: matrix factorisation trained with BPR."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from graphrec.blocks.bpr import bpr_loss, l2_reg
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.models.base import RecModel
from graphrec.registry import register_model


@register_model("mfbpr")
class MFBPR(RecModel):
    """MF-BPR: matrix factorisation of ID embeddings trained with BPR.

    Score ``<e_u, e_i>`` of free ID embeddings (U x d, N x d), BPR + L2 on the batch embeddings.
    """

    name = "mfbpr"
    distributed_loss = "rows"  # BPR and L2 are means over the batch rows
    # 0.1, not LightGCN's 1e-4: free ID embeddings overfit. On TikTok (tiktok.inter, batch 4096,
    # patience 30) reg 1e-4 peaks early and seed-dependently (seed 2024 stopped at epoch 98 with
    # valid R@20 0.043 / test 0.0345 while seed 2025 was at 0.053 and still rising; at lr 1e-2 it
    # peaks at 0.044 by epoch 8 and falls), reg 1e-2 the same; reg 0.1 keeps rising past 0.07
    # (lr 1e-2) and is ahead of 1e-4 from epoch 20 at lr 1e-3 (docs/results.md).
    default_config = {"reg_weight": 0.1}

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        super().__init__(dataset, config)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, self.embedding_size)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, self.embedding_size)))
        self.reg_weight = float(config["reg_weight"])

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_emb, self.item_emb

    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        u, p, n = self.user_emb[batch.users], self.item_emb[batch.pos], self.item_emb[batch.neg]
        bpr = bpr_loss((u * p).sum(1), (u * n).sum(1))
        reg = self.reg_weight * l2_reg(u, p, n)
        return {"loss": bpr + reg, "bpr": bpr, "reg": reg}
