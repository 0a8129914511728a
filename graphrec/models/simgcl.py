"""SimGCL (Yu et al., SIGIR 2022): LightGCN with graph-free contrastive views from uniform noise."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from graphrec.blocks.bpr import batch_bpr, batch_l2
from graphrec.blocks.infonce import contrast_views
from graphrec.blocks.perturbed import PerturbedPropagation
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.models.base import RecModel, check_keys
from graphrec.registry import register_model


@register_model("simgcl")
class SimGCL(RecModel):
    """SimGCL: ``n_layers`` LightGCN layers (mean of layers ``1..L``); two views add uniform noise
    of norm ``eps`` after every layer (:class:`~graphrec.blocks.perturbed.PerturbedPropagation`).

    Loss: BPR on the noise-free representations + ``cl_weight`` x (InfoNCE of the two views'
    users + InfoNCE of their items, over the batch's distinct users / positive items,
    temperature ``temp``) + ``reg_weight`` x L2 of the batch's ego embeddings.
    The layer is the block named by ``ui_block`` (slot ``ui_conv``).
    Shapes: :meth:`representations` -> ``(U, d), (N, d)``.
    """

    name = "simgcl"
    default_config = {
        "n_layers": 2,
        "eps": 0.1,
        "cl_weight": 0.2,
        "temp": 0.2,
        "reg_weight": 1e-4,
        "ui_block": "lightgcn_conv",
    }
    block_slots = {"ui_block": "ui_conv"}

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        check_keys("simgcl", config, positive=("temp",), non_negative=("eps", "cl_weight", "reg_weight", "n_layers"))
        super().__init__(dataset, config)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, self.embedding_size)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, self.embedding_size)))
        self.propagation = PerturbedPropagation(int(config["n_layers"]), conv=self.make_block("ui_block"))
        self.eps, self.cl_weight = float(config["eps"]), float(config["cl_weight"])
        self.temp, self.reg_weight = float(config["temp"]), float(config["reg_weight"])

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagation(self.graph, self.user_emb, self.item_emb)

    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        user, item = self.representations()
        bpr = batch_bpr(user, item, batch)
        reg = self.reg_weight * batch_l2(self.user_emb, self.item_emb, batch)
        out = {"bpr": bpr, "reg": reg}
        total = bpr + reg
        if self.cl_weight:
            u1, i1 = self.propagation(self.graph, self.user_emb, self.item_emb, self.eps)
            u2, i2 = self.propagation(self.graph, self.user_emb, self.item_emb, self.eps)
            cl = contrast_views(u1, i1, u2, i2, batch, self.temp)
            out["cl"] = self.cl_weight * cl
            total = total + out["cl"]
        out["loss"] = total
        return out

