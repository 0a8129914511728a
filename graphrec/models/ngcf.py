"""NGCF (Wang et al., SIGIR 2019): graph convolution with feature transforms and a bi-interaction term."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from graphrec.blocks.bpr import batch_bpr, batch_l2
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.models.base import RecModel, check_keys
from graphrec.registry import register_model


@register_model("ngcf")
class NGCF(RecModel):
    """NGCF (SIGIR 2019): graph convolution with feature transforms and a bi-interaction term.

    ``n_layers`` layers of the block named by ``ui_block`` (slot ``ui_conv``, default
    :class:`~graphrec.blocks.ngcf.NGCFConv`), one instance (own weights) per layer.

    Representation: ``[E⁰ ; E¹/||E¹|| ; … ; Eᴸ/||Eᴸ||]`` (row-wise L2 norm of every propagated layer),
    so users and items are ``(·, d (L+1))``. Loss: BPR + ``reg_weight`` x L2 of the batch's ego embeddings.
    """

    name = "ngcf"
    default_config = {"n_layers": 3, "reg_weight": 1e-5, "ui_block": "ngcf_conv"}
    block_slots = {"ui_block": "ui_conv"}

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        check_keys("ngcf", config, non_negative=("reg_weight", "n_layers"))
        super().__init__(dataset, config)
        self.add_id_embeddings()
        self.layers = nn.ModuleList(self.make_block("ui_block") for _ in range(int(config["n_layers"])))
        self.reg_weight = float(config["reg_weight"])

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        h = {"user": self.user_emb, "item": self.item_emb}
        users, items = [h["user"]], [h["item"]]
        for layer in self.layers:
            h = layer(self.graph, h)
            users.append(F.normalize(h["user"], dim=1))
            items.append(F.normalize(h["item"], dim=1))
        return torch.cat(users, dim=1), torch.cat(items, dim=1)

    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        user, item = self.representations()
        bpr = batch_bpr(user, item, batch)
        reg = self.reg_weight * batch_l2(self.user_emb, self.item_emb, batch)
        return {"loss": bpr + reg, "bpr": bpr, "reg": reg}
