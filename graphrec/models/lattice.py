"""LATTICE (Zhang et al., ACM MM 2021): item-item graphs learned from features on top of LightGCN."""

from __future__ import annotations

from typing import Any

import dgl
import torch
import torch.nn.functional as F
from torch import nn

from graphrec.blocks.bpr import batch_bpr, batch_l2
from graphrec.blocks.learned_graph import LearnedKNNGraph
from graphrec.blocks.lightgcn import LightGCNPropagation
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.errors import GraphrecError
from graphrec.graph.heterograph import build_heterograph
from graphrec.graph.knn import frozen_knn_graph
from graphrec.models.base import check_keys
from graphrec.models.multimodal import MultimodalBaseline
from graphrec.registry import register_model


@register_model("lattice")
class LATTICE(MultimodalBaseline):
    """LATTICE: per modality a graph learned from projected features
    (:class:`~graphrec.blocks.learned_graph.LearnedKNNGraph`, ``knn_k`` neighbours) and the frozen
    kNN graph of the raw features (relations ``knn_<m>``, similarity-weighted, ``D^-1/2 S D^-1/2``),
    mixed as ``Â = Σ_m a_m [(1 - λ) Ŝ_m + λ S̃_m]`` with ``a = softmax(α)`` learned and
    ``λ = frozen_weight``. Item ID embeddings are propagated ``n_mm_layers`` times over ``Â``
    (the frozen part through the ``item_conv`` block named by ``item_graph_block``) and added,
    L2-normalised, to LightGCN's item output (``n_ui_layers``, layer mean):
    ``i = i_CF + h/||h||``, ``u = u_CF``. The learned graphs are rebuilt at every forward.

    Loss: BPR + ``reg_weight`` x L2 of the batch's ego embeddings.
    Shapes: :meth:`representations` -> ``(U, d), (N, d)``.
    """

    name = "lattice"
    default_config = {
        **MultimodalBaseline.default_config,
        "knn_k": 10,
        "frozen_weight": 0.9,
        "n_mm_layers": 1,
        "n_ui_layers": 2,
        "reg_weight": 1e-4,
        "knn_chunk_size": 2048,
        "ui_block": "lightgcn_conv",
        "item_graph_block": "item_graph_conv",
    }
    block_slots = {"ui_block": "ui_conv", "item_graph_block": "item_conv"}

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        check_keys("lattice", config, positive=("knn_k", "knn_chunk_size"), non_negative=("n_mm_layers", "n_ui_layers", "reg_weight"))
        if not 0 <= float(config["frozen_weight"]) <= 1:
            raise GraphrecError(f"lattice: 'frozen_weight' must be in [0, 1], got {config['frozen_weight']!r}")
        super().__init__(dataset, config)
        d = self.embedding_size
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, d)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, d)))
        self.propagation = LightGCNPropagation(int(config["n_ui_layers"]), conv=self.make_block("ui_block"))
        self.item_conv = self.make_block("item_graph_block")
        k, chunk = int(config["knn_k"]), int(config["knn_chunk_size"])
        self.learned = nn.ModuleDict({m: LearnedKNNGraph(self.feature(m).shape[1], d, k, chunk) for m in self.modalities})
        self.modal_logits = nn.Parameter(torch.zeros(len(self.modalities)))  # α, softmax -> a
        self.n_mm_layers = int(config["n_mm_layers"])
        self.frozen_weight = float(config["frozen_weight"])
        self.reg_weight = float(config["reg_weight"])

    def build_graph(self, dataset: RecDataset) -> dgl.DGLGraph:
        """The user-item relations plus the frozen similarity-weighted ``knn_<m>`` item graphs."""
        k, chunk = int(self.config["knn_k"]), int(self.config["knn_chunk_size"])
        graphs = {m: frozen_knn_graph(dataset.features[m], k, binary=False, chunk_size=chunk) for m in dataset.modalities}
        return build_heterograph(dataset.n_users, dataset.n_items, dataset.train, item_graphs=graphs)

    def learned_graphs(self) -> dict[str, dgl.DGLGraph]:
        """``{m: Ŝ_m}`` learned from the current projections (:class:`LearnedKNNGraph`)."""
        return {m: self.learned[m](self.feature(m)) for m in self.modalities}

    def item_graph_embeddings(self) -> torch.Tensor:
        """``(N, d)``: ``Â^L`` applied to the item ID embeddings."""
        learned = self.learned_graphs() if self.frozen_weight < 1 else {}
        a = torch.softmax(self.modal_logits, dim=0)
        lam = self.frozen_weight
        h = self.item_emb
        for _ in range(self.n_mm_layers):
            out = 0
            for j, m in enumerate(self.modalities):
                step = lam * self.item_conv(self.graph, h, m)
                if m in learned:
                    step = step + (1 - lam) * LearnedKNNGraph.propagate(learned[m], h)
                out = out + a[j] * step
            h = out
        return h

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        user, item = self.propagation(self.graph, self.user_emb, self.item_emb)
        return user, item + F.normalize(self.item_graph_embeddings(), dim=1)

    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        user, item = self.representations()
        bpr = batch_bpr(user, item, batch)
        reg = self.reg_weight * batch_l2(self.user_emb, self.item_emb, batch)
        return {"loss": bpr + reg, "bpr": bpr, "reg": reg}
