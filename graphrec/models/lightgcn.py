"""LightGCN (He et al., 2020) on the heterograph's user-item relations."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from graphrec.blocks.bpr import bpr_loss, l2_reg
from graphrec.blocks.lightgcn import LightGCNPropagation
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.models.base import RecModel
from graphrec.registry import register_model


@register_model("lightgcn")
class LightGCN(RecModel):
    """LightGCN (SIGIR 2020): ID embeddings propagated on the user-item graph, layer mean.

    ``n_layers`` symmetric-normalised layers (swappable ``ui_block``), mean of layers 0..L.

    Loss: BPR on the propagated embeddings + ``reg_weight`` x L2 of the batch's ego embeddings.
    The layer is the block named by ``ui_block`` (slot ``ui_conv``, default ``lightgcn_conv``).
    """

    name = "lightgcn"
    distributed_loss = "rows"  # BPR and L2 are means over the batch rows
    default_config = {"n_layers": 3, "reg_weight": 1e-4, "ui_block": "lightgcn_conv"}
    block_slots = {"ui_block": "ui_conv"}

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        super().__init__(dataset, config)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, self.embedding_size)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, self.embedding_size)))
        self.propagation = LightGCNPropagation(int(config["n_layers"]), conv=self.make_block("ui_block"))
        self.reg_weight = float(config["reg_weight"])

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagation(self.graph, self.user_emb, self.item_emb)

    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        user, item = self.representations()
        u, p, n = user[batch.users], item[batch.pos], item[batch.neg]
        bpr = bpr_loss((u * p).sum(1), (u * n).sum(1))
        reg = self.reg_weight * l2_reg(self.user_emb[batch.users], self.item_emb[batch.pos], self.item_emb[batch.neg])
        return {"loss": bpr + reg, "bpr": bpr, "reg": reg}
