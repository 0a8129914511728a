"""SGL (Wu et al., SIGIR 2021), edge-dropout variant SGL-ED: LightGCN + contrast of two dropped graphs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from graphrec.blocks.bpr import batch_bpr, batch_l2
from graphrec.blocks.edge_dropout import EdgeDropout
from graphrec.blocks.infonce import contrast_views
from graphrec.blocks.lightgcn import LightGCNPropagation
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.models.base import RecModel, check_keys
from graphrec.registry import register_model

if TYPE_CHECKING:  # pragma: no cover
    from graphrec.train.trainer import Trainer


@register_model("sgl")
class SGL(RecModel):
    """SGL-ED: LightGCN (mean of layers ``0..L``) on the full graph for the recommendation loss;
    two views of the graph, each keeping ``1 - drop_ratio`` of the interactions
    (:class:`~graphrec.blocks.edge_dropout.EdgeDropout`, redrawn every epoch), for the
    self-supervised loss.

    Loss: BPR + ``cl_weight`` x (InfoNCE of the views' users + of their items, over the batch's
    distinct users / positive items, temperature ``temp``) + ``reg_weight`` x L2 of the batch's
    ego embeddings. The layer is the block named by ``ui_block`` (slot ``ui_conv``).
    Shapes: :meth:`representations` -> ``(U, d), (N, d)``.
    """

    name = "sgl"
    default_config = {
        "n_layers": 3,
        "drop_ratio": 0.1,
        "cl_weight": 0.1,
        "temp": 0.2,
        "reg_weight": 1e-4,
        "ui_block": "lightgcn_conv",
    }
    block_slots = {"ui_block": "ui_conv"}

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        check_keys("sgl", config, positive=("temp",), non_negative=("cl_weight", "reg_weight", "n_layers"), unit=("drop_ratio",))
        super().__init__(dataset, config)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, self.embedding_size)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, self.embedding_size)))
        self.propagation = LightGCNPropagation(int(config["n_layers"]), conv=self.make_block("ui_block"))
        self.dropout = EdgeDropout()
        self.keep = 1.0 - float(config["drop_ratio"])
        self.cl_weight, self.temp = float(config["cl_weight"]), float(config["temp"])
        self.reg_weight = float(config["reg_weight"])
        self.views = (self.graph, self.graph)

    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None:
        """Draw the epoch's two edge-dropped views (SGL redraws them every epoch)."""
        self.views = (self.dropout(self.graph, self.keep), self.dropout(self.graph, self.keep))

    def to_device(self, device: torch.device | str) -> "SGL":
        super().to_device(device)
        self.views = tuple(v.to(device) for v in self.views)
        return self

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagation(self.graph, self.user_emb, self.item_emb)

    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        user, item = self.representations()
        bpr = batch_bpr(user, item, batch)
        reg = self.reg_weight * batch_l2(self.user_emb, self.item_emb, batch)
        out = {"bpr": bpr, "reg": reg}
        total = bpr + reg
        if self.cl_weight:
            u1, i1 = self.propagation(self.views[0], self.user_emb, self.item_emb)
            u2, i2 = self.propagation(self.views[1], self.user_emb, self.item_emb)
            out["cl"] = self.cl_weight * contrast_views(u1, i1, u2, i2, batch, self.temp)
            total = total + out["cl"]
        out["loss"] = total
        return out
