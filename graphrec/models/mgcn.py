"""MGCN (Yu et al., ACM MM 2023): multi-view graph convolution with purified modality features."""

from __future__ import annotations

from typing import Any

import dgl
import torch

from graphrec.blocks.bpr import batch_bpr, batch_l2
from graphrec.blocks.infonce import infonce_gathered
from graphrec.blocks.lightgcn import LightGCNPropagation
from graphrec.blocks.mgcn import BehaviorFuser, BehaviorPurifier
from graphrec.blocks.user_aggregation import UserAggregation
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.graph.heterograph import build_heterograph
from graphrec.graph.ann import KNN_SEARCH_DEFAULTS, KnnSearch
from graphrec.graph.knn import frozen_knn_graph
from graphrec.models.base import check_keys
from graphrec.models.multimodal import MultimodalBaseline
from graphrec.registry import register_model


@register_model("mgcn")
class MGCN(MultimodalBaseline):
    """MGCN (MM 2023): purified modality features on item graphs, fused with the user-item view.

    Three views of every user and item, fused:

    * user–item view ``E``: LightGCN on the ID embeddings (``n_ui_layers``, layer mean);
    * item–item view per modality: purified features ``x̃_m = e_i ⊙ σ(W(P_m x_m))``
      (:class:`~graphrec.blocks.mgcn.BehaviorPurifier`) propagated ``n_mm_layers`` times over the
      frozen similarity-weighted kNN graph (relations ``knn_<m>``, the ``item_conv`` block named by
      ``item_graph_block``); users get ``R x̃_m`` (:class:`~graphrec.blocks.user_aggregation.UserAggregation`
      with the symmetric weight ``w``);
    * fusion: ``S`` = :class:`~graphrec.blocks.mgcn.BehaviorFuser` of the modality views, gated by
      ``E``; final representation ``E + S``.

    Loss: BPR + ``reg_weight`` x L2 of the batch's final representations + ``cl_weight`` x
    [InfoNCE(S_i, E_i) + InfoNCE(S_u, E_u)] over the batch's positive items and users (τ = ``temp``).
    Shapes: :meth:`representations` -> ``(U, d), (N, d)``.
    """

    name = "mgcn"
    default_config = {
        **MultimodalBaseline.default_config,
        "knn_k": 10,
        "n_ui_layers": 2,
        "n_mm_layers": 1,
        "reg_weight": 1e-4,
        "cl_weight": 0.03,
        "temp": 0.2,
        "knn_chunk_size": 2048,
        # exact / approximate kNN search (graphrec.graph.ann, docs/scaling.md)
        **KNN_SEARCH_DEFAULTS,
        "train_features": True,
        "ui_block": "lightgcn_conv",
        "item_graph_block": "item_graph_conv",
    }
    block_slots = {"ui_block": "ui_conv", "item_graph_block": "item_conv"}

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        check_keys("mgcn", config, positive=("knn_k", "knn_chunk_size", "temp"), non_negative=("n_ui_layers", "n_mm_layers", "reg_weight", "cl_weight"))
        super().__init__(dataset, config)
        d = self.embedding_size
        self.add_id_embeddings()
        self.propagation = LightGCNPropagation(int(config["n_ui_layers"]), conv=self.make_block("ui_block"))
        self.item_conv = self.make_block("item_graph_block")
        self.purifier = BehaviorPurifier({m: self.feature(m).shape[1] for m in self.modalities}, d)
        self.to_users = UserAggregation("w")
        self.fuser = BehaviorFuser(self.modalities, d)
        self.n_mm_layers = int(config["n_mm_layers"])
        self.reg_weight, self.cl_weight, self.temp = float(config["reg_weight"]), float(config["cl_weight"]), float(config["temp"])

    def build_graph(self, dataset: RecDataset) -> dgl.DGLGraph:
        """The user-item relations plus the frozen similarity-weighted ``knn_<m>`` item graphs."""
        k, chunk = int(self.config["knn_k"]), int(self.config["knn_chunk_size"])
        search = KnnSearch.from_config(self.config, "mgcn")
        graphs = {m: frozen_knn_graph(dataset.features[m], k, binary=False, chunk_size=chunk, search=search) for m in dataset.modalities}
        return build_heterograph(dataset.n_users, dataset.n_items, dataset.train, item_graphs=graphs)

    def views(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U + N, d)`` each: the user–item view ``E`` and the fused side view ``S``."""
        user, item = self.propagation(self.graph, self.user_emb, self.item_emb)
        ids = torch.cat([user, item])
        modal = {}
        for m, h in self.purifier(self.item_emb, {m: self.feature(m) for m in self.modalities}).items():
            for _ in range(self.n_mm_layers):
                h = self.item_conv(self.graph, h, m)
            modal[m] = torch.cat([self.to_users(self.graph, h), h])
        return ids, self.fuser(modal, ids)

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        ids, side = self.views()
        return torch.split(ids + side, [self.n_users, self.n_items])

    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        ids, side = self.views()
        user, item = torch.split(ids + side, [self.n_users, self.n_items])
        bpr = batch_bpr(user, item, batch)
        reg = self.reg_weight * batch_l2(user, item, batch)
        u, i = batch.users, batch.pos + self.n_users
        cl = self.cl_weight * (infonce_gathered(side, ids, i, i, self.temp) + infonce_gathered(side, ids, u, u, self.temp))
        return {"loss": bpr + reg + cl, "bpr": bpr, "reg": reg, "cl": cl}
