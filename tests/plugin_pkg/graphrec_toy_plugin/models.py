"""Toy model ``toy_mf``: ID embeddings after one user-item layer (slot ``ui_block``), BPR loss.

The entry point ``toy_mf = graphrec_toy_plugin.models`` names this module; the decorator
registers the model when it is imported.
"""

from __future__ import annotations

import torch
from torch import nn

from graphrec.blocks import bpr_loss
from graphrec.models import RecModel
from graphrec.registry import register_model


@register_model("toy_mf")
class ToyMF(RecModel):
    """Toy plugin model: ego + one propagated layer of ID embeddings, BPR."""

    name = "toy_mf"
    default_config = {"ui_block": "lightgcn_conv"}
    block_slots = {"ui_block": "ui_conv"}

    def __init__(self, dataset, config) -> None:
        super().__init__(dataset, config)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, self.embedding_size)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, self.embedding_size)))
        self.conv = self.make_block("ui_block")

    def representations(self):
        h = self.conv(self.graph, {"user": self.user_emb, "item": self.item_emb})
        return self.user_emb + h["user"], self.item_emb + h["item"]

    def loss(self, batch):
        user, item = self.representations()
        u, p, n = user[batch.users], item[batch.pos], item[batch.neg]
        bpr = bpr_loss((u * p).sum(1), (u * n).sum(1))
        return {"loss": bpr, "bpr": bpr}
