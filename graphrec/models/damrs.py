"""DAMRS (Xv et al., KDD 2024): denoising and aligning multimodal content and user feedback."""

from __future__ import annotations

from typing import Any

import dgl
import torch
import torch.nn.functional as F

from graphrec.blocks.denoise_align import (
    agreement_weights,
    neighbour_loss,
    symmetric_bernoulli_kl_logits,
    weighted_bpr,
)
from graphrec.blocks.lightgcn import LightGCNPropagation
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.errors import GraphrecError
from graphrec.graph.ann import KNN_SEARCH_DEFAULTS, KnnSearch
from graphrec.graph.denoised import cooccurrence_graph, denoised_knn_graphs
from graphrec.graph.heterograph import build_heterograph
from graphrec.models.base import check_keys
from graphrec.models.multimodal import MultimodalBaseline
from graphrec.registry import register_model

#: the name of the co-interaction ("behaviour") item graph, relation ``knn_behavior``
BEHAVIOR = "behavior"


@register_model("damrs")
class DAMRS(MultimodalBaseline):
    """DAMRS (KDD 2024): denoised item graphs, pseudo-neighbour alignment of the views, agreement-weighted BPR.

    Views of the item ID embeddings ``e_i``: per modality ``h_m = Ã_m^L e_i`` over the *denoised* kNN
    graph (relations ``knn_<m>``, :func:`~graphrec.graph.denoised.denoised_knn_graphs`) and
    ``h_b = Ã_b^L e_i`` over the co-interaction graph (relation ``knn_behavior``,
    :func:`~graphrec.graph.denoised.cooccurrence_graph`), ``L = n_mm_layers`` steps of the ``item_conv``
    block named by ``item_graph_block``. With ``(u, i_g)`` = LightGCN (``n_ui_layers``, layer mean):
    items ``i_g + h̄``, ``h̄ = mean_v h_v``; scores ``e_uᵀ (i_g + h̄)_i``.

    Loss: agreement-weighted BPR (:func:`~graphrec.blocks.denoise_align.agreement_weights`)
    + ``neighbor_weight`` x mean_v neighbour discrimination of the batch's distinct items against the
    ``n_pseudo`` pseudo neighbours the views agree on (and the ``n_pseudo`` the target view alone sees)
    + ``kl_weight`` x symmetric KL between ``σ(u · norm(i_g))`` and ``σ(u · norm(h̄))`` over the
    batch's distinct users × items.
    Shapes: :meth:`representations` -> ``(U, d), (N, d)``.
    """

    name = "damrs"
    default_config = {
        **MultimodalBaseline.default_config,
        "knn_k": 10,
        "cooc_k": 10,
        "n_ui_layers": 2,
        "n_mm_layers": 1,
        "kl_weight": 1.0,
        "neighbor_weight": 0.001,
        "temp": 0.2,
        # pseudo neighbours per row and kind (agreed / target-only): the authors' two-modality code
        # fixes 10, their three-modality (TikTok) code uses knn_k
        "n_pseudo": 10,
        "knn_chunk_size": 2048,
        # exact / approximate kNN search (graphrec.graph.ann, docs/scaling.md)
        **KNN_SEARCH_DEFAULTS,
        "ui_block": "lightgcn_conv",
        "item_graph_block": "item_graph_conv",
    }
    block_slots = {"ui_block": "ui_conv", "item_graph_block": "item_conv"}

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        check_keys("damrs", config, positive=("knn_k", "cooc_k", "knn_chunk_size", "temp", "n_pseudo"), non_negative=("n_ui_layers", "n_mm_layers", "kl_weight", "neighbor_weight"))
        if BEHAVIOR in dataset.modalities:
            raise GraphrecError(f"damrs: a modality may not be named '{BEHAVIOR}' (the co-interaction graph's name)")
        super().__init__(dataset, config)
        self.add_id_embeddings()
        self.propagation = LightGCNPropagation(int(config["n_ui_layers"]), conv=self.make_block("ui_block"))
        self.item_conv = self.make_block("item_graph_block")
        self.views_order = [*self.modalities, BEHAVIOR]
        self.n_mm_layers = int(config["n_mm_layers"])
        self.kl_weight, self.neighbor_weight, self.temp = float(config["kl_weight"]), float(config["neighbor_weight"]), float(config["temp"])
        self.n_pseudo = int(config["n_pseudo"])

    def build_graph(self, dataset: RecDataset) -> dgl.DGLGraph:
        """The user-item relations, the denoised ``knn_<m>`` graphs and ``knn_behavior``."""
        chunk = int(self.config["knn_chunk_size"])
        search = KnnSearch.from_config(self.config, "damrs")
        graphs = denoised_knn_graphs(dataset.features, int(self.config["knn_k"]), chunk, search=search)
        graphs[BEHAVIOR] = cooccurrence_graph(dataset.train, dataset.n_users, dataset.n_items, int(self.config["cooc_k"]), chunk)
        return build_heterograph(dataset.n_users, dataset.n_items, dataset.train, item_graphs=graphs)

    def item_views(self) -> dict[str, torch.Tensor]:
        """``{m | 'behavior': (N, d)}``: the ID embeddings propagated on each item graph."""
        out = {}
        for v in self.views_order:
            h = self.item_emb
            for _ in range(self.n_mm_layers):
                h = self.item_conv(self.graph, h, v)
            out[v] = h
        return out

    def forward_all(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        user, item = self.propagation(self.graph, self.user_emb, self.item_emb)
        return user, item, self.item_views()

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        user, item, views = self.forward_all()
        return user, item + sum(views.values()) / len(views)

    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        user, item, views = self.forward_all()
        mean_view = sum(views.values()) / len(views)
        u = user[batch.users]
        w_pos, w_neg = agreement_weights(u, [h[batch.pos] for h in views.values()], [h[batch.neg] for h in views.values()])
        full = item + mean_view
        bpr = weighted_bpr((u * full[batch.pos]).sum(1), (u * full[batch.neg]).sum(1), w_pos, w_neg)
        users, items = torch.unique(batch.users), torch.unique(torch.cat([batch.pos, batch.neg]))
        neigh = neighbour_loss([views[v] for v in self.views_order], items, self.temp, self.n_pseudo)
        logit_g = user[users] @ F.normalize(item[items], dim=1).T  # KL of σ(logit_g) and σ(logit_t)
        logit_t = user[users] @ F.normalize(mean_view[items], dim=1).T
        kl = self.kl_weight * symmetric_bernoulli_kl_logits(logit_g, logit_t)
        neigh = self.neighbor_weight * neigh
        return {"loss": bpr + neigh + kl, "bpr": bpr, "neighbor": neigh, "kl": kl}
