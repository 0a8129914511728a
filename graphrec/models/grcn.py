"""GRCN (Wei et al., ACM MM 2020): graph-refined convolution, user-item edges weighted by modality affinity."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from graphrec.blocks.bpr import batch_bpr
from graphrec.blocks.edge_attention import AffinityAttention, EdgeWeightedConv
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.graph.heterograph import IU, UI
from graphrec.graph.spmm import edge_index
from graphrec.models.base import check_keys
from graphrec.models.multimodal import MultimodalBaseline
from graphrec.registry import register_model


@register_model("grcn")
class GRCN(MultimodalBaseline):
    """GRCN (MM 2020): modality affinities refine (weight and prune) the user-item graph the ID embeddings run on.

    Per modality ``m`` (content size ``c``): items ``f_i = norm(leaky_relu(W_m x_i + b_m))``, users a
    learned preference ``p_u`` (normalised). *Routing* (``n_routing`` times, graph refining layer):
    ``p_u <- norm(p_u + Σ_{i ∈ N(u)} softmax_i(<p_u, f_i>) f_i)``. Then one
    :class:`~graphrec.blocks.edge_attention.AffinityAttention` step over both directions gives the
    modality's representation ``[p; f] + attention output`` and affinities ``α^m_e``.

    Edge weights (``confid`` mode): ``w_e = relu(max_m α^m_e c^m_{src(e)})`` with a learned confidence
    ``c (U + N, M)``; edges whose every modality disagrees get 0 (pruned).
    ID embeddings: ``x = norm(e)``, ``x^{l+1} = EdgeWeightedConv(x^l, w)`` (``n_id_layers``), ``id = Σ_l x^l``.
    Representation: ``[id ‖ content_m1 ‖ …]`` (width ``d + M c``); scores are dot products.

    Loss: BPR + ``reg_weight`` x [mean(e²) of the batch's users and items + Σ_m mean(p^m²) of its users].
    Shapes: :meth:`representations` -> ``(U, d + M c), (N, d + M c)``.
    """

    name = "grcn"
    default_config = {
        **MultimodalBaseline.default_config,
        "content_size": 64,
        "n_routing": 2,
        "n_id_layers": 2,
        "reg_weight": 0.0,
        "learning_rate": 0.005,
    }

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        check_keys("grcn", config, positive=("content_size",), non_negative=("n_routing", "n_id_layers", "reg_weight"))
        super().__init__(dataset, config)
        d, c = self.embedding_size, int(config["content_size"])
        self.ids = nn.Parameter(nn.init.xavier_normal_(torch.empty(self.n_users + self.n_items, d)))
        self.mlps = nn.ModuleDict()
        for m in self.modalities:
            self.mlps[m] = nn.Linear(self.feature(m).shape[1], c)
            nn.init.xavier_normal_(self.mlps[m].weight)
        self.preferences = nn.ParameterDict({m: nn.Parameter(nn.init.xavier_normal_(torch.empty(self.n_users, c))) for m in self.modalities})
        self.confidence = nn.Parameter(nn.init.xavier_normal_(torch.empty(self.n_users + self.n_items, len(self.modalities))))
        self.attention = AffinityAttention()
        self.conv = EdgeWeightedConv()
        self.n_routing, self.n_id_layers = int(config["n_routing"]), int(config["n_id_layers"])
        self.reg_weight = float(config["reg_weight"])

    def content(self, m: str) -> tuple[torch.Tensor, dict]:
        """``(U + N, c)`` modality representation and its affinities ``{UI: (E,), IU: (E,)}``."""
        f = F.normalize(F.leaky_relu(self.mlps[m](self.feature(m))), dim=1)
        p = F.normalize(self.preferences[m], dim=1)
        for _ in range(self.n_routing):
            out, _ = self.attention(self.graph, {"user": p, "item": f}, relations=(IU,))
            p = F.normalize(p + out["user"], dim=1)
        out, alphas = self.attention(self.graph, {"user": p, "item": f})
        return torch.cat([p + out["user"], f + out["item"]]), alphas

    def edge_weights(self, alphas: dict[str, dict]) -> dict:
        """``{UI: (E,), IU: (E,)}``: ``relu(max_m α^m_e c^m_{src(e)})``."""
        dev = self.confidence.device
        u, i = edge_index(self.graph, UI, dev)
        conf_user, conf_item = self.confidence[: self.n_users], self.confidence[self.n_users :]
        out = {}
        for rel, src_conf in ((UI, conf_user[u]), (IU, conf_item[i])):
            a = torch.stack([alphas[m][rel] for m in self.modalities], dim=1)  # (E, M)
            out[rel] = torch.relu((a * src_conf).amax(dim=1))
        return out

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        contents, alphas = [], {}
        for m in self.modalities:
            rep, alphas[m] = self.content(m)
            contents.append(rep)
        w = self.edge_weights(alphas)
        x = dict(zip(("user", "item"), torch.split(F.normalize(self.ids, dim=1), [self.n_users, self.n_items])))
        total = torch.cat([x["user"], x["item"]])
        for _ in range(self.n_id_layers):
            x = self.conv(self.graph, x, w)
            total = total + torch.cat([x["user"], x["item"]])
        return torch.split(torch.cat([total, *contents], dim=1), [self.n_users, self.n_items])

    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        user, item = self.representations()
        bpr = batch_bpr(user, item, batch)
        e_u, e_i = self.ids[: self.n_users], self.ids[self.n_users :]
        reg = e_u[batch.users].pow(2).mean() + torch.cat([e_i[batch.pos], e_i[batch.neg]]).pow(2).mean()
        reg = self.reg_weight * (reg + sum(p[batch.users].pow(2).mean() for p in self.preferences.values()))
        return {"loss": bpr + reg, "bpr": bpr, "reg": reg}
