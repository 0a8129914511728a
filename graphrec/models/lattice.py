"""LATTICE (Zhang et al., ACM MM 2021): item-item graphs learned from features on top of LightGCN."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dgl
import torch
import torch.nn.functional as F
from torch import nn

from graphrec.blocks.bpr import batch_bpr, batch_l2
from graphrec.blocks.learned_graph import LearnedGraph, LearnedKNNGraph, combine
from graphrec.blocks.lightgcn import LightGCNPropagation
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.errors import GraphrecError
from graphrec.graph.heterograph import build_heterograph
from graphrec.graph.ann import KNN_SEARCH_DEFAULTS, KnnSearch
from graphrec.graph.knn import frozen_knn_graph
from graphrec.models.base import check_keys
from graphrec.models.multimodal import MultimodalBaseline
from graphrec.registry import register_model

if TYPE_CHECKING:  # pragma: no cover
    from graphrec.train.trainer import Trainer


@register_model("lattice")
class LATTICE(MultimodalBaseline):
    """LATTICE (MM 2021): item-item graphs learned from features, mixed with frozen kNN graphs.

    Item ID embeddings propagated ``n_mm_layers`` times over
    ``Â = (1 - λ) Ŝ + λ Σ_m a_m S̃_m`` (``λ = frozen_weight``, ``a = softmax(α)`` learned), where

    * ``Ŝ`` is learned: every modality's ``knn_k``-NN graph of its projected features
      (:class:`~graphrec.blocks.learned_graph.LearnedKNNGraph`), mixed by ``a`` and normalised
      (:func:`~graphrec.blocks.learned_graph.combine`);
    * ``S̃_m`` is frozen: the similarity-weighted ``knn_k``-NN graph of the raw features
      (relations ``knn_<m>``, read by the ``item_conv`` block named by ``item_graph_block``).

    The result is added, L2-normalised, to LightGCN's item output (``n_ui_layers``, layer mean):
    ``i = i_CF + h/||h||``, ``u = u_CF``. As in the authors' code, ``Ŝ`` is rebuilt (with a
    gradient) on the first batch of every epoch and reused, detached, by the epoch's other batches;
    scoring rebuilds it from the current weights. The feature tables are trained (``train_features``).

    Loss: BPR + ``reg_weight`` x L2 of the batch's propagated user / item representations
    (the authors' ``decay`` term). Shapes: :meth:`representations` -> ``(U, d), (N, d)``.
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
        # exact / approximate kNN search (graphrec.graph.ann, docs/scaling.md)
        **KNN_SEARCH_DEFAULTS,
        "train_features": True,
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
        self.add_id_embeddings()
        self.propagation = LightGCNPropagation(int(config["n_ui_layers"]), conv=self.make_block("ui_block"))
        self.item_conv = self.make_block("item_graph_block")
        k, chunk = int(config["knn_k"]), int(config["knn_chunk_size"])
        self.learned = nn.ModuleDict({m: LearnedKNNGraph(self.feature(m).shape[1], d, k, chunk) for m in self.modalities})
        self.modal_logits = nn.Parameter(torch.zeros(len(self.modalities)))  # α (equal at start), softmax -> a
        self.n_mm_layers = int(config["n_mm_layers"])
        self.frozen_weight = float(config["frozen_weight"])
        self.reg_weight = float(config["reg_weight"])
        self._cached: LearnedGraph | None = None

    def build_graph(self, dataset: RecDataset) -> dgl.DGLGraph:
        """The user-item relations plus the frozen similarity-weighted ``knn_<m>`` item graphs."""
        k, chunk = int(self.config["knn_k"]), int(self.config["knn_chunk_size"])
        search = KnnSearch.from_config(self.config, "lattice")
        graphs = {m: frozen_knn_graph(dataset.features[m], k, binary=False, chunk_size=chunk, search=search) for m in dataset.modalities}
        return build_heterograph(dataset.n_users, dataset.n_items, dataset.train, item_graphs=graphs)

    def learned_graph(self) -> LearnedGraph:
        """``Ŝ``: the modalities' learned kNN graphs mixed by ``a = softmax(α)`` and normalised
        (:func:`~graphrec.blocks.learned_graph.combine`); differentiable in the projections and ``α``."""
        graphs = [self.learned[m](self.feature(m)) for m in self.modalities]
        return combine(graphs, torch.softmax(self.modal_logits, dim=0))

    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None:
        """The next batch rebuilds ``Ŝ`` with a gradient; the epoch's other batches reuse it detached."""
        self._cached = None

    def get_epoch_state(self) -> Any:
        """The epoch's detached ``Ŝ`` (built at its first batch): edges, node count and weights, or ``None``."""
        if self._cached is None:
            return None
        src, dst = self._cached.graph.edges()
        return {"src": src, "dst": dst, "n": self._cached.graph.num_nodes(), "weight": self._cached.weight.cpu()}

    def set_epoch_state(self, state: Any) -> None:
        if state is None:
            self._cached = None
            return
        g = dgl.graph((state["src"], state["dst"]), num_nodes=int(state["n"]), idtype=torch.int64)
        self._cached = LearnedGraph(g, state["weight"].to(self.item_emb.device))

    def item_graph_embeddings(self, learned: LearnedGraph | None) -> torch.Tensor:
        """``(N, d)``: ``Â^L`` applied to the item ID embeddings, ``Â = (1 - λ) Ŝ + λ Σ_m a_m S̃_m``."""
        a = torch.softmax(self.modal_logits, dim=0)
        lam = self.frozen_weight
        h = self.item_emb
        for _ in range(self.n_mm_layers):
            out = sum(a[j] * self.item_conv(self.graph, h, m) for j, m in enumerate(self.modalities)) * lam
            if learned is not None:
                out = out + (1 - lam) * learned.propagate(h)
            h = out
        return h

    def _forward(self, learned: LearnedGraph | None) -> tuple[torch.Tensor, torch.Tensor]:
        user, item = self.propagation(self.graph, self.user_emb, self.item_emb)
        return user, item + F.normalize(self.item_graph_embeddings(learned), dim=1)

    def _learned(self) -> LearnedGraph | None:
        return self.learned_graph() if self.frozen_weight < 1 else None

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scoring rebuilds ``Ŝ`` from the current weights (as the authors' test step)."""
        return self._forward(self._learned())

    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        if self._cached is None:  # first batch of the epoch: Ŝ with a gradient
            learned = self._learned()
            if learned is not None:
                self._cached = learned.detach()
        else:
            learned = self._cached
        user, item = self._forward(learned)
        bpr = batch_bpr(user, item, batch)
        reg = self.reg_weight * batch_l2(user, item, batch)
        return {"loss": bpr + reg, "bpr": bpr, "reg": reg}
