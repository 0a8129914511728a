"""Shared base of SGL and SimGCL: LightGCN-style ID embeddings trained with BPR plus a two-view InfoNCE."""

from __future__ import annotations

from typing import Any

import torch

from graphrec.blocks.bpr import batch_bpr, batch_l2
from graphrec.blocks.contrast import contrast_views
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.models.base import RecModel, check_keys

Views = tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class TwoViewContrastive(RecModel):
    """ID embeddings; loss = BPR on :meth:`representations` + ``cl_weight`` x
    :func:`~graphrec.blocks.contrast.contrast_views` of the two :meth:`views` (temperature ``temp``)
    + ``reg_weight`` x L2 of the batch's ego embeddings.

    Subclasses implement :meth:`representations` and :meth:`views`; they declare ``n_layers``,
    ``cl_weight``, ``temp`` and ``reg_weight`` in ``default_config``.
    """

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        check_keys(self.name, config, positive=("temp",), non_negative=("cl_weight", "reg_weight", "n_layers"))
        super().__init__(dataset, config)
        self.add_id_embeddings()
        self.cl_weight, self.temp = float(config["cl_weight"]), float(config["temp"])
        self.reg_weight = float(config["reg_weight"])

    def views(self) -> Views:
        """Two ``((U, d), (N, d))`` views of the users and items to contrast."""
        raise NotImplementedError

    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        user, item = self.representations()
        bpr = batch_bpr(user, item, batch)
        reg = self.reg_weight * batch_l2(self.user_emb, self.item_emb, batch)
        out = {"bpr": bpr, "reg": reg}
        total = bpr + reg
        if self.cl_weight:
            (u1, i1), (u2, i2) = self.views()
            out["cl"] = self.cl_weight * contrast_views(u1, i1, u2, i2, batch, self.temp)
            total = total + out["cl"]
        out["loss"] = total
        return out
