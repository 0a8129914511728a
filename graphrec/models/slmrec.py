"""SLMRec (Tao et al., IEEE TMM 2022): self-supervised learning for multimedia recommendation (FAC task)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from graphrec.blocks.encoders import xavier_linear
from graphrec.blocks.fine_coarse import FineCoarseContrast
from graphrec.blocks.infonce import infonce_gathered
from graphrec.blocks.lightgcn import LightGCNPropagation
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.models.base import check_keys
from graphrec.models.multimodal import MultimodalBaseline
from graphrec.registry import register_model


@register_model("slmrec")
class SLMRec(MultimodalBaseline):
    """SLMRec (TMM 2022): LightGCN views of the IDs and of every modality, fused; in-batch InfoNCE plus FAC.

    Views: ``E^id = LightGCN(e_u, e_i)`` and per modality ``E^m = LightGCN(e_u, W_m x_m)`` (the users
    start from the same ID embedding; ``n_layers`` layers, layer mean, the ``ui_conv`` block named by
    ``ui_block``). Fusion: ``z_u = F_u [E^id_u ‖ E^m1_u ‖ …]``, ``z_i = F_i [E^id_i ‖ …]``
    (``F``: ``(M + 1) d -> d`` linear maps). Scores ``z_uᵀ z_i``.

    Loss over the batch's (user, positive) pairs (its negatives are not used):
    ``InfoNCE_temp(z_u, z_i)`` with in-batch negatives (rows L2-normalised) + ``ssl_weight`` x the
    fine-and-coarse contrast of the positives' ID and modality views
    (:class:`~graphrec.blocks.fine_coarse.FineCoarseContrast`, τ = ``ssl_temp``, over the items that
    observe each modality). Shapes: :meth:`representations` -> ``(U, d), (N, d)``.
    """

    name = "slmrec"
    default_config = {
        **MultimodalBaseline.default_config,
        "feature_norm": "l2",
        "n_layers": 3,
        "temp": 0.2,
        "ssl_weight": 0.05,
        "ssl_temp": 0.5,
        "ui_block": "lightgcn_conv",
    }
    block_slots = {"ui_block": "ui_conv"}

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        check_keys("slmrec", config, positive=("temp", "ssl_temp"), non_negative=("n_layers", "ssl_weight"))
        super().__init__(dataset, config)
        d = self.embedding_size
        self.add_id_embeddings()
        self.propagation = LightGCNPropagation(int(config["n_layers"]), conv=self.make_block("ui_block"))
        self.dense = nn.ModuleDict({m: xavier_linear(self.feature(m).shape[1], d) for m in self.modalities})
        width = (len(self.modalities) + 1) * d
        self.fuse_user, self.fuse_item = xavier_linear(width, d), xavier_linear(width, d)
        self.fac = FineCoarseContrast(self.modalities, d)
        self.temp, self.ssl_weight, self.ssl_temp = float(config["temp"]), float(config["ssl_weight"]), float(config["ssl_temp"])

    def views(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{'id' | m: ((U, d), (N, d))}``: the LightGCN views."""
        out = {"id": self.propagation(self.graph, self.user_emb, self.item_emb)}
        for m in self.modalities:
            out[m] = self.propagation(self.graph, self.user_emb, self.dense[m](self.feature(m)))
        return out

    def fuse(self, views: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        order = ["id", *self.modalities]
        return self.fuse_user(torch.cat([views[k][0] for k in order], 1)), self.fuse_item(torch.cat([views[k][1] for k in order], 1))

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fuse(self.views())

    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        views = self.views()
        user, item = self.fuse(views)
        main = infonce_gathered(user, item, batch.users, batch.pos, self.temp)
        items = batch.pos
        obs = {m: self.observed[items, k] for k, m in enumerate(self.modalities)}
        ssl = self.fac(views["id"][1][items], {m: views[m][1][items] for m in self.modalities}, obs, self.ssl_temp)
        ssl = self.ssl_weight * ssl
        return {"loss": main + ssl, "infonce": main, "ssl": ssl}
