"""GUME (Lin et al., CIKM 2024): graphs and user modalities enhancement for long-tail multimodal recommendation."""

from __future__ import annotations

from typing import Any

import dgl
import torch
from torch import nn

from graphrec.blocks.bpr import batch_bpr
from graphrec.blocks.generators import perturb
from graphrec.blocks.infonce import infonce, infonce_gathered
from graphrec.blocks.lightgcn import LightGCNPropagation
from graphrec.blocks.mgcn import BehaviorFuser, BehaviorPurifier
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.graph.ann import KNN_SEARCH_DEFAULTS, KnnSearch
from graphrec.graph.enhanced import (
    enhanced_graph,
    modality_neighbours,
    shared_neighbours,
)
from graphrec.graph.heterograph import IU
from graphrec.graph.knn import sym_normalize
from graphrec.graph.spmm import u_mul_e_sum
from graphrec.models.base import check_keys
from graphrec.models.multimodal import MultimodalBaseline
from graphrec.registry import register_model


def moment_gap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GUME's alignment of two modality tables: ``|var(a) - var(b)| + |mean(a) - mean(b)|`` over all entries."""
    if a.numel() == 0:
        return a.sum() * 0.0
    return (a.var() - b.var()).abs() + (a.mean() - b.mean()).abs()


@register_model("gume")
class GUME(MultimodalBaseline):
    """GUME (CIKM 2024): MGCN-style purified, fused modality views on an enhanced user-item graph, plus
    alignment and user-modality contrast.

    Graph: user-item edges plus item-item edges between items every modality's ``knn_k`` lists share
    (``enhance_graph``; :mod:`graphrec.graph.enhanced`), normalised together; ``E^id`` = LightGCN on it
    (``n_ui_layers``, layer mean, block ``enhanced_conv``). Per modality: purified items
    ``x̃_m = e_i ⊙ σ(W(P_m x_m))`` (:class:`~graphrec.blocks.mgcn.BehaviorPurifier`) propagated
    ``n_layers`` times on the modality's kNN graph (``item_conv`` slot), users ``R̂ x̃_m``: the explicit
    view ``E^m``; the extended view ``X^m`` = LightGCN of (a user table ``t^m``, ``x̃_m`` propagated).
    ``I = BehaviorFuser({E^m}, E^id)`` (MGCN's fuser); final ``E^id + I``.

    Loss: BPR + ``reg_weight_1`` L2(final batch rows) + ``vt_weight`` x mean over modality pairs of the
    moment gap of the positives' ``E^m`` (items observing both) + ``bm_weight`` x [InfoNCE(I_u, E^id_u)
    + InfoNCE(I_i, E^id_i) over the positives observing every modality] (τ = ``bm_temp``) +
    ``um_weight`` x [InfoNCE(X̄_u, I_u) + InfoNCE of two noisy copies of I_u + of X̄_u] (τ = ``um_temp``,
    noise as SimGCL with ε = 0.1, ``X̄ = mean_m X^m``) + ``reg_weight_2`` · ½||X̄_{i+}||² / B.
    Shapes: :meth:`representations` -> ``(U, d), (N, d)``.
    """

    name = "gume"
    default_config = {
        **MultimodalBaseline.default_config,
        "knn_k": 10,
        "n_ui_layers": 2,
        "n_layers": 1,
        "enhance_graph": True,
        "bm_weight": 0.01,
        "bm_temp": 0.4,
        "um_weight": 0.01,
        "um_temp": 0.1,
        "vt_weight": 0.1,
        "reg_weight_1": 1e-5,
        "reg_weight_2": 0.1,
        "knn_chunk_size": 2048,
        # exact / approximate kNN search (graphrec.graph.ann, docs/scaling.md)
        **KNN_SEARCH_DEFAULTS,
        "train_features": True,
        "learning_rate_scheduler": [0.96, 50],
        "ui_block": "enhanced_conv",
        "item_graph_block": "item_graph_conv",
    }
    block_slots = {"ui_block": "ui_conv", "item_graph_block": "item_conv"}

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        check_keys("gume", config, positive=("knn_k", "knn_chunk_size", "bm_temp", "um_temp"),
                   non_negative=("n_ui_layers", "n_layers", "bm_weight", "um_weight", "vt_weight", "reg_weight_1", "reg_weight_2"))  # fmt: skip
        super().__init__(dataset, config)
        d = self.embedding_size
        self.add_id_embeddings()
        self.propagation = LightGCNPropagation(int(config["n_ui_layers"]), conv=self.make_block("ui_block"))
        self.item_conv = self.make_block("item_graph_block")
        self.purifier = BehaviorPurifier({m: self.feature(m).shape[1] for m in self.modalities}, d)
        self.fuser = BehaviorFuser(self.modalities, d)
        self.extended_users = nn.ParameterDict({m: nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, d))) for m in self.modalities})
        self.n_layers = int(config["n_layers"])
        c = config
        self.bm_weight, self.bm_temp, self.um_weight, self.um_temp = float(c["bm_weight"]), float(c["bm_temp"]), float(c["um_weight"]), float(c["um_temp"])
        self.vt_weight, self.reg_weight_1, self.reg_weight_2 = float(c["vt_weight"]), float(c["reg_weight_1"]), float(c["reg_weight_2"])

    def build_graph(self, dataset: RecDataset) -> dgl.DGLGraph:
        """User-item edges, the ``knn_<m>`` graphs and the enhancement (:func:`~graphrec.graph.enhanced.enhanced_graph`)."""
        search = KnnSearch.from_config(self.config, "gume")
        neigh = modality_neighbours(dataset.features, dataset.missing.missing, int(self.config["knn_k"]), int(self.config["knn_chunk_size"]), search=search)
        shared = shared_neighbours(neigh) if bool(self.config["enhance_graph"]) and len(neigh) > 1 else None
        graphs = {m: sym_normalize(a) for m, a in neigh.items()}
        return enhanced_graph(dataset.n_users, dataset.n_items, dataset.train, graphs, shared)

    def views(self) -> dict[str, Any]:
        """``id``, ``explicit`` ``{m: (U + N, d)}``, ``extended`` ``(U + N, d)`` (mean over modalities), ``final``."""
        ids = torch.cat(self.propagation(self.graph, self.user_emb, self.item_emb))
        explicit, extended = {}, []
        feats = {m: self.feature(m) for m in self.modalities}
        for m, h in self.purifier(self.item_emb, feats).items():
            for _ in range(self.n_layers):
                h = self.item_conv(self.graph, h, m)
            users = u_mul_e_sum(self.graph, IU, h, self.graph.edges[IU].data["w_enh"])
            explicit[m] = torch.cat([users, h])
            extended.append(torch.cat(self.propagation(self.graph, self.extended_users[m], h)))
        integration = self.fuser(explicit, ids)
        return {"id": ids, "explicit": explicit, "extended": sum(extended) / len(extended), "integration": integration, "final": ids + integration}

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.split(self.views()["final"], [self.n_users, self.n_items])

    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        v = self.views()
        split = [self.n_users, self.n_items]
        user, item = torch.split(v["final"], split)
        b = batch.users.shape[0]
        bpr = batch_bpr(user, item, batch)
        reg = self.reg_weight_1 * 0.5 * (user[batch.users].pow(2).sum() + item[batch.pos].pow(2).sum() + item[batch.neg].pow(2).sum()) / b
        pos = batch.pos
        obs = self.observed[pos]
        gaps = []
        for a in range(len(self.modalities)):
            for c in range(a + 1, len(self.modalities)):
                both = pos[obs[:, a] & obs[:, c]]
                ea, ec = (v["explicit"][m][self.n_users + both] for m in (self.modalities[a], self.modalities[c]))
                gaps.append(moment_gap(ea, ec))
        vt = self.vt_weight * (sum(gaps) / len(gaps) if gaps else user.new_zeros(()))
        iu, ii = torch.split(v["integration"], split)
        du, di = torch.split(v["id"], split)
        xu, xi = torch.split(v["extended"], split)
        full = pos[obs.all(1)]
        bm = self.bm_weight * (infonce_gathered(iu, du, batch.users, batch.users, self.bm_temp) + infonce_gathered(ii, di, full, full, self.bm_temp))
        u = batch.users
        noisy = infonce(perturb(iu[u], 0.1), perturb(iu[u], 0.1), self.um_temp) + infonce(perturb(xu[u], 0.1), perturb(xu[u], 0.1), self.um_temp)
        um = self.um_weight * (infonce_gathered(xu, iu, u, u, self.um_temp) + noisy)
        reg = reg + self.reg_weight_2 * 0.5 * xi[pos].pow(2).sum() / b
        return {"loss": bpr + reg + vt + bm + um, "bpr": bpr, "reg": reg, "align": vt + bm, "um": um}
