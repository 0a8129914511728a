"""LGMRec (Guo et al., AAAI 2024): local graph embeddings plus global hypergraph embeddings."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from graphrec.blocks.bpr import batch_bpr
from graphrec.blocks.hyperedges import LearnableHyperedges
from graphrec.blocks.infonce import infonce_all_gathered
from graphrec.blocks.lightgcn import LightGCNPropagation
from graphrec.blocks.user_aggregation import UserAggregation
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.errors import GraphrecError
from graphrec.models.base import check_keys
from graphrec.models.multimodal import MultimodalBaseline
from graphrec.registry import register_model


@register_model("lgmrec")
class LGMRec(MultimodalBaseline):
    """LGMRec (AAAI 2024): collaborative + modality graph embeddings (local) and hypergraph embeddings (global).

    * collaborative graph embedding ``E^c``: LightGCN on the ID embeddings (``n_ui_layers``, layer mean,
      the ``ui_conv`` block named by ``ui_block``);
    * modality graph embedding per modality: items ``x_m W_m`` (``W_m: d_m -> d``, no bias), users the
      mean of their train items' rows (:class:`~graphrec.blocks.user_aggregation.UserAggregation`),
      then ``n_mm_layers`` steps of the same ``ui_conv`` block, last step kept: ``E^m``;
      local ``E^l = E^c + Σ_m norm(E^m)`` (row-wise L2 normalisation);
    * global: per modality, ``hyper_num`` learnable hyperedges
      (:class:`~graphrec.blocks.hyperedges.LearnableHyperedges`, Gumbel-softmax assignments from the
      raw features, dropout keep rate ``keep_rate``) propagate the items of ``E^c`` ``n_hyper_layers``
      times: ``G^m``; ``E^g = Σ_m G^m``;
    * final ``E = E^l + alpha · norm(E^g)``, scores ``e_uᵀ e_i``.

    Loss: BPR + ``cl_weight`` x Σ_{m<m'} [InfoNCE(G^m_u, G^{m'}_u | all users) + InfoNCE(G^m_i, G^{m'}_i | all items)]
    over the batch's users and positive items (summed, τ = ``temp``) + ``reg_weight`` x
    (||E_u|| + ||E_i+|| + ||E_i-||) / B of the batch's final representations.
    Shapes: :meth:`representations` -> ``(U, d), (N, d)``.
    """

    name = "lgmrec"
    default_config = {
        **MultimodalBaseline.default_config,
        "n_ui_layers": 2,
        "n_mm_layers": 2,
        "n_hyper_layers": 1,
        "hyper_num": 4,
        "keep_rate": 0.5,
        "alpha": 0.3,
        "cl_weight": 1e-4,
        "reg_weight": 1e-6,
        "temp": 0.2,
        "ui_block": "lightgcn_conv",
    }
    block_slots = {"ui_block": "ui_conv"}

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        check_keys("lgmrec", config, positive=("hyper_num", "temp", "n_hyper_layers"), non_negative=("n_ui_layers", "n_mm_layers", "alpha", "cl_weight", "reg_weight"))
        if not 0 < float(config["keep_rate"]) <= 1:
            raise GraphrecError(f"lgmrec: 'keep_rate' must be in (0, 1], got {config['keep_rate']!r}")
        super().__init__(dataset, config)
        d = self.embedding_size
        self.add_id_embeddings()
        self.conv = self.make_block("ui_block")
        self.propagation = LightGCNPropagation(int(config["n_ui_layers"]), conv=self.conv)
        self.to_users = UserAggregation("w_mean")
        widths = {m: self.feature(m).shape[1] for m in self.modalities}
        self.projections = nn.ParameterDict({m: nn.Parameter(nn.init.xavier_uniform_(torch.empty(w, d))) for m, w in widths.items()})
        k, tau, keep = int(config["hyper_num"]), float(config["temp"]), float(config["keep_rate"])
        self.hyperedges = nn.ModuleDict({m: LearnableHyperedges(w, k, tau, keep) for m, w in widths.items()})
        self.n_mm_layers, self.n_hyper_layers = int(config["n_mm_layers"]), int(config["n_hyper_layers"])
        self.alpha, self.temp = float(config["alpha"]), float(config["temp"])
        self.cl_weight, self.reg_weight = float(config["cl_weight"]), float(config["reg_weight"])

    def modality_embedding(self, m: str) -> torch.Tensor:
        """``(U + N, d)``: ``E^m``, the modality's features propagated on the user-item graph."""
        item = self.feature(m) @ self.projections[m]
        h = {"user": self.to_users(self.graph, item), "item": item}
        for _ in range(self.n_mm_layers):
            h = self.conv(self.graph, h)
        return torch.cat([h["user"], h["item"]])

    def views(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(U + N, d)`` final representations and ``{m: (U + N, d)}`` the hypergraph embeddings ``G^m``."""
        user, item = self.propagation(self.graph, self.user_emb, self.item_emb)
        local = torch.cat([user, item]) + sum(F.normalize(self.modality_embedding(m), dim=1) for m in self.modalities)
        hyper = {}
        for m in self.modalities:
            hu, hi = self.hyperedges[m](self.graph, self.feature(m), item, self.n_hyper_layers)
            hyper[m] = torch.cat([hu, hi])
        return local + self.alpha * F.normalize(sum(hyper.values()), dim=1), hyper

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        final, _ = self.views()
        return torch.split(final, [self.n_users, self.n_items])

    def hypergraph_contrast(self, hyper: dict[str, torch.Tensor], batch: BPRBatch) -> torch.Tensor:
        """Σ over modality pairs of the batch users' and positive items' InfoNCE against all users / items."""
        total = self.user_emb.new_zeros(())
        u, i = batch.users, batch.pos
        for a, m in enumerate(self.modalities):
            for m2 in self.modalities[a + 1 :]:
                gu, gu2 = torch.split(hyper[m], [self.n_users, self.n_items]), torch.split(hyper[m2], [self.n_users, self.n_items])
                total = total + infonce_all_gathered(gu[0], gu2[0], u, self.temp) + infonce_all_gathered(gu[1], gu2[1], i, self.temp)
        return total

    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        final, hyper = self.views()
        user, item = torch.split(final, [self.n_users, self.n_items])
        bpr = batch_bpr(user, item, batch)
        cl = self.cl_weight * self.hypergraph_contrast(hyper, batch)
        rows = (user[batch.users], item[batch.pos], item[batch.neg])
        reg = self.reg_weight * sum(r.norm() for r in rows) / max(batch.users.shape[0], 1)
        return {"loss": bpr + cl + reg, "bpr": bpr, "cl": cl, "reg": reg}
