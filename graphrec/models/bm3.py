"""BM3 (Zhou et al., WWW 2023): bootstrapped latent representations for multimodal recommendation."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from graphrec.blocks.bootstrap import BootstrapAlignment
from graphrec.blocks.encoders import xavier_linear
from graphrec.blocks.lightgcn import LightGCNPropagation
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.models.base import check_keys
from graphrec.models.multimodal import MultimodalBaseline
from graphrec.registry import register_model


@register_model("bm3")
class BM3(MultimodalBaseline):
    """BM3 (WWW 2023): bootstrapped latent views without negatives, feature alignment and masking.

    LightGCN (``n_layers``, layer mean) plus the item ID embedding, ``ĩ = i_CF + e_i``; a
    shared predictor ``p`` and a stop-gradient, dropout-perturbed target
    (:class:`~graphrec.blocks.bootstrap.BootstrapAlignment`) replace negative sampling.

    With ``c(a, b) = 1 - mean cos(a, b)``, ``t(·)`` the target view and ``f_m = P_m x_m``
    (``P_m``: ``d_m -> d``), over the batch's (user, positive item) pairs:

        L = c(p(u), t(ĩ)) + c(p(ĩ), t(u)) + reg_weight · (||U||_F + ||Ĩ||_F) / N
            + cl_weight · Σ_m [c(p(f_m), t(ĩ)) + c(p(f_m), t(f_m))]

    (the negatives of the batch are not used). Scores: ``p(u)ᵀ p(ĩ)``.
    Shapes: :meth:`representations` -> ``(U, d), (N, d)``.
    """

    name = "bm3"
    default_config = {
        **MultimodalBaseline.default_config,
        "n_layers": 1,
        "dropout": 0.3,
        "reg_weight": 0.01,
        "cl_weight": 2.0,
        "train_features": True,
        "ui_block": "lightgcn_conv",
    }
    block_slots = {"ui_block": "ui_conv"}

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        check_keys("bm3", config, non_negative=("n_layers", "reg_weight", "cl_weight"), unit=("dropout",))
        super().__init__(dataset, config)
        d = self.embedding_size
        self.add_id_embeddings()
        self.propagation = LightGCNPropagation(int(config["n_layers"]), conv=self.make_block("ui_block"))
        self.bootstrap = BootstrapAlignment(d, float(config["dropout"]))
        self.projections = nn.ModuleDict({m: xavier_linear(self.feature(m).shape[1], d) for m in self.modalities})
        for layer in self.projections.values():
            nn.init.xavier_normal_(layer.weight)  # the authors' init of P_m
        self.reg_weight, self.cl_weight = float(config["reg_weight"]), float(config["cl_weight"])

    def encode(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U, d), (N, d)``: LightGCN's users and ``i_CF + e_i`` (before the predictor)."""
        user, item = self.propagation(self.graph, self.user_emb, self.item_emb)
        return user, item + self.item_emb

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        user, item = self.encode()
        return self.bootstrap(user), self.bootstrap(item)

    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        user, item = self.encode()
        users, items = batch.users, batch.pos
        bs = self.bootstrap
        u_target, i_target = bs.target(user)[users], bs.target(item)[items]
        align = bs.distance(bs(user[users]), i_target) + bs.distance(bs(item[items]), u_target)
        reg = self.reg_weight * (user.norm() + item.norm()) / item.shape[0]
        modal = user.new_zeros(())
        for m in self.modalities:
            f = self.projections[m](self.feature(m)[items])
            modal = modal + bs.distance(bs(f), i_target) + bs.distance(bs(f), bs.target(f))
        modal = self.cl_weight * modal
        return {"loss": align + reg + modal, "align": align, "reg": reg, "modal": modal}
