"""MMGCN (Wei et al., ACM MM 2019): one graph convolution tower per modality on the user-item graph."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from graphrec.blocks.bpr import batch_bpr
from graphrec.blocks.encoders import xavier_linear
from graphrec.blocks.mmgcn import MMGCNLayer
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.models.base import check_keys
from graphrec.models.multimodal import MultimodalBaseline
from graphrec.registry import register_model


@register_model("mmgcn")
class MMGCN(MultimodalBaseline):
    """MMGCN (MM 2019): modality-specific GCN towers over the user-item graph, averaged.

    Per modality ``m``: items start from their features ``x_m`` (first mapped to ``latent_size`` by a
    linear layer when wider than it), users from a learned preference vector ``p_u^m`` of the same
    width; both are L2-normalised and pass ``n_layers`` :class:`~graphrec.blocks.mmgcn.MMGCNLayer`
    steps (own weights per layer and modality), each adding the shared ID embedding ``e_v``.
    Representation ``z_v = mean_m x_v^{m,L}``; scores ``z_uᵀ z_i``.

    Loss: BPR + ``reg_weight`` x [mean(e_u²) + mean(e_i²) over the batch (positives and negatives) + Σ_m mean(p^m²)].
    Shapes: :meth:`representations` -> ``(U, d), (N, d)``.
    """

    name = "mmgcn"
    default_config = {
        **MultimodalBaseline.default_config,
        "n_layers": 3,
        "latent_size": 256,
        "reg_weight": 1e-3,
    }

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        check_keys("mmgcn", config, positive=("n_layers", "latent_size"), non_negative=("reg_weight",))
        super().__init__(dataset, config)
        d, latent, n_layers = self.embedding_size, int(config["latent_size"]), int(config["n_layers"])
        self.ids = nn.Parameter(nn.init.xavier_normal_(torch.empty(self.n_users + self.n_items, d)))
        self.inputs = nn.ModuleDict()
        self.preferences = nn.ParameterDict()
        self.towers = nn.ModuleDict()
        for m in self.modalities:
            width = self.feature(m).shape[1]
            if width > latent:
                self.inputs[m] = xavier_linear(width, latent)
                width = latent
            self.preferences[m] = nn.Parameter(nn.init.xavier_normal_(torch.empty(self.n_users, width)))
            self.towers[m] = nn.ModuleList([MMGCNLayer(width if k == 0 else d, d) for k in range(n_layers)])
        self.reg_weight = float(config["reg_weight"])

    def tower(self, m: str) -> torch.Tensor:
        """``(U + N, d)``: modality ``m``'s tower output ``x^{m,L}``."""
        item = self.feature(m)
        if m in self.inputs:
            item = self.inputs[m](item)
        x = {"user": F.normalize(self.preferences[m], dim=1), "item": F.normalize(item, dim=1)}
        ids = dict(zip(("user", "item"), torch.split(self.ids, [self.n_users, self.n_items])))
        for layer in self.towers[m]:
            x = layer(self.graph, x, ids)
        return torch.cat([x["user"], x["item"]])

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        z = sum(self.tower(m) for m in self.modalities) / len(self.modalities)
        return torch.split(z, [self.n_users, self.n_items])

    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        user, item = self.representations()
        bpr = batch_bpr(user, item, batch)
        e_u, e_i = self.ids[: self.n_users], self.ids[self.n_users :]
        reg = e_u[batch.users].pow(2).mean() + torch.cat([e_i[batch.pos], e_i[batch.neg]]).pow(2).mean()
        reg = self.reg_weight * (reg + sum(p.pow(2).mean() for p in self.preferences.values()))
        return {"loss": bpr + reg, "bpr": bpr, "reg": reg}
