"""FREEDOM (Zhou & Shen, ACM MM 2023): frozen feature-kNN item graph + degree-sensitive edge pruning."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dgl
import torch
from torch import nn

from graphrec.blocks.bpr import batch_bpr, bpr_loss
from graphrec.blocks.edge_dropout import DegreeSensitivePruning, view_from_pairs, view_pairs
from graphrec.blocks.encoders import xavier_linear
from graphrec.blocks.lightgcn import LightGCNPropagation
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.graph.heterograph import build_heterograph
from graphrec.graph.ann import KNN_SEARCH_DEFAULTS, KnnSearch
from graphrec.graph.knn import frozen_knn_graph
from graphrec.models.base import check_keys
from graphrec.models.multimodal import MultimodalBaseline
from graphrec.registry import register_model

if TYPE_CHECKING:  # pragma: no cover
    from graphrec.train.trainer import Trainer


@register_model("freedom")
class FREEDOM(MultimodalBaseline):
    """FREEDOM (MM 2023): frozen feature-kNN item graph, degree-sensitive pruning of the user-item graph.

    Item ID embeddings propagated ``n_mm_layers`` times over the frozen item graph
    ``S = Σ_m a_m S_m`` (``a`` from ``mm_weights``, default equal; relations ``knn_<m>``, the ``item_conv`` block named by
    ``item_graph_block``), added to LightGCN on the user-item graph (``n_ui_layers``, layer mean).

    Every epoch, training propagates over a copy of the user-item graph pruned to
    ``1 - edge_drop`` of its edges, kept with probability ``∝ 1/sqrt(d_u d_i)``
    (:class:`~graphrec.blocks.edge_dropout.DegreeSensitivePruning`); evaluation uses the full graph.

    Loss: BPR(u, i) + ``reg_weight`` x Σ_m BPR(u, P_m x_m) with ``P_m`` a linear map of the
    modality's features to ``d`` (FREEDOM's modality-aware BPR terms); the feature tables are
    trained too (``train_features``), the item graph built from them at construction is not.
    Shapes: :meth:`representations` -> ``(U, d), (N, d)``.
    """

    name = "freedom"
    default_config = {
        **MultimodalBaseline.default_config,
        "knn_k": 10,
        "n_mm_layers": 1,
        "n_ui_layers": 2,
        "edge_drop": 0.8,
        "reg_weight": 1e-4,
        "knn_chunk_size": 2048,
        # exact / approximate kNN search (graphrec.graph.ann, docs/scaling.md)
        **KNN_SEARCH_DEFAULTS,
        # weights of the modalities' item graphs (null = equal; the authors: {image: 0.1, text: 0.9})
        "mm_weights": None,
        "train_features": True,
        "ui_block": "lightgcn_conv",
        "item_graph_block": "item_graph_conv",
    }
    block_slots = {"ui_block": "ui_conv", "item_graph_block": "item_conv"}

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        check_keys("freedom", config, positive=("knn_k", "knn_chunk_size"), non_negative=("n_mm_layers", "n_ui_layers", "reg_weight"), unit=("edge_drop",))
        super().__init__(dataset, config)
        d = self.embedding_size
        self.add_id_embeddings()
        self.propagation = LightGCNPropagation(int(config["n_ui_layers"]), conv=self.make_block("ui_block"))
        self.item_conv = self.make_block("item_graph_block")
        self.n_mm_layers = int(config["n_mm_layers"])
        self.mm_weights = self.modality_weights()
        self.projections = nn.ModuleDict({m: xavier_linear(self.feature(m).shape[1], d) for m in self.modalities})
        self.pruning = DegreeSensitivePruning()
        self.keep = 1.0 - float(config["edge_drop"])
        self.reg_weight = float(config["reg_weight"])
        self.train_graph: dgl.DGLGraph = self.graph

    def build_graph(self, dataset: RecDataset) -> dgl.DGLGraph:
        """The user-item relations plus the frozen ``knn_<m>`` item graphs (:func:`~graphrec.graph.knn.frozen_knn_graph`, binary)."""
        k, chunk = int(self.config["knn_k"]), int(self.config["knn_chunk_size"])
        search = KnnSearch.from_config(self.config, "freedom")
        graphs = {m: frozen_knn_graph(dataset.features[m], k, binary=True, chunk_size=chunk, search=search) for m in dataset.modalities}
        return build_heterograph(dataset.n_users, dataset.n_items, dataset.train, item_graphs=graphs)

    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None:
        """Prune the user-item graph for this epoch (FREEDOM redraws it every epoch)."""
        self.train_graph = self.pruning(self.graph, self.keep)

    def get_epoch_state(self) -> Any:
        """The epoch's pruned graph as its kept (user, item) pairs (``None`` before the first epoch)."""
        return None if self.train_graph is self.graph else {"pruned": view_pairs(self.train_graph)}

    def set_epoch_state(self, state: Any) -> None:
        if state is not None:
            self.train_graph = view_from_pairs(state["pruned"], self.graph)

    def item_graph_embeddings(self) -> torch.Tensor:
        """``(N, d)``: ``S^L`` applied to the item ID embeddings, ``S = Σ_m a_m S_m``."""
        h = self.item_emb
        for _ in range(self.n_mm_layers):
            h = sum(a * self.item_conv(self.graph, h, m) for m, a in self.mm_weights.items() if a)
        return h

    def _forward(self, ui_graph: dgl.DGLGraph) -> tuple[torch.Tensor, torch.Tensor]:
        user, item = self.propagation(ui_graph, self.user_emb, self.item_emb)
        return user, item + self.item_graph_embeddings()

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._forward(self.graph)

    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        user, item = self._forward(self.train_graph)
        bpr = batch_bpr(user, item, batch)
        u = user[batch.users]
        modal = sum(
            bpr_loss((u * self.projections[m](self.feature(m)[batch.pos])).sum(1), (u * self.projections[m](self.feature(m)[batch.neg])).sum(1))
            for m in self.modalities
        )
        reg = self.reg_weight * modal
        return {"loss": bpr + reg, "bpr": bpr, "modal_bpr": reg}
