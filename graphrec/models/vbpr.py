"""VBPR (He & McAuley, AAAI 2016): matrix factorisation with a learned projection of item content."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from graphrec.blocks.bpr import batch_bpr, l2_reg
from graphrec.blocks.encoders import xavier_linear
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.models.base import check_keys
from graphrec.models.multimodal import MultimodalBaseline
from graphrec.registry import register_model


@register_model("vbpr")
class VBPR(MultimodalBaseline):
    """VBPR (AAAI 2016): matrix factorisation plus a learned projection of the item features.

    ``x̂_ui = β_i + γ_uᵀγ_i + θ_uᵀ(E f_i) + β'ᵀ f_i`` with ``f_i`` the concatenated item features.

    ``γ`` and ``θ`` have ``embedding_size`` columns each; ``E`` is ``d x Σ d_m``, ``β'`` is ``Σ d_m``
    (no bias). Scored as one dot product: users ``[γ_u; θ_u; 1; 1]`` and items
    ``[γ_i; E f_i; β_i; β'ᵀ f_i]``, both ``(·, 2d + 2)``. Loss: BPR + ``reg_weight`` x L2 of the
    batch's ``γ_u, θ_u, γ_i, β_i`` (positives and negatives) + ``reg_weight`` x ``||E||² + ||β'||²`` / 2 / B.
    """

    name = "vbpr"
    default_config = {**MultimodalBaseline.default_config, "reg_weight": 1e-4}

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        check_keys("vbpr", config, non_negative=("reg_weight",))
        super().__init__(dataset, config)
        d = self.embedding_size
        width = sum(self.feature(m).shape[1] for m in self.modalities)
        self.gamma_user = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, d)))
        self.theta_user = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, d)))
        self.gamma_item = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, d)))
        self.item_bias = nn.Parameter(torch.zeros(self.n_items, 1))
        self.projection = xavier_linear(width, d, bias=False)  # E
        self.visual_bias = xavier_linear(width, 1, bias=False)  # β'
        self.reg_weight = float(config["reg_weight"])

    def content(self) -> torch.Tensor:
        """``(N, Σ d_m)`` concatenated filled features ``f_i``."""
        return torch.cat([self.feature(m) for m in self.modalities], dim=1)

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.content()
        ones = torch.ones(self.n_users, 2, device=f.device)
        user = torch.cat([self.gamma_user, self.theta_user, ones], dim=1)
        item = torch.cat([self.gamma_item, self.projection(f), self.item_bias, self.visual_bias(f)], dim=1)
        return user, item

    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        user, item = self.representations()
        bpr = batch_bpr(user, item, batch)
        u, p, n = batch.users, batch.pos, batch.neg
        reg = self.reg_weight * (
            l2_reg(self.gamma_user[u], self.theta_user[u], self.gamma_item[p], self.gamma_item[n], self.item_bias[p], self.item_bias[n])
            + (self.projection.weight.pow(2).sum() + self.visual_bias.weight.pow(2).sum()) / 2.0 / max(len(u), 1)
        )
        return {"loss": bpr + reg, "bpr": bpr, "reg": reg}
