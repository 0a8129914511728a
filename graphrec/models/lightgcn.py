"""LightGCN (He et al., 2020) on the heterograph's user-item relations."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from graphrec.blocks.bpr import bpr_loss, l2_reg
from graphrec.blocks.lightgcn import LightGCNConv, LightGCNMeanConv, LightGCNPropagation
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.errors import GraphrecError
from graphrec.graph.sampling import UserItemSampler, check_propagation, check_sampler, lookup, resolve_fanouts
from graphrec.models.base import RecModel
from graphrec.registry import register_model


@register_model("lightgcn")
class LightGCN(RecModel):
    """LightGCN (SIGIR 2020): ID embeddings propagated on the user-item graph, layer mean.

    ``n_layers`` symmetric-normalised layers (swappable ``ui_block``), mean of layers 0..L.

    Loss: BPR on the propagated embeddings + ``reg_weight`` x L2 of the batch's ego embeddings.
    The layer is the block named by ``ui_block`` (slot ``ui_conv``, default ``lightgcn_conv``).

    ``propagation: sampled`` computes a training batch's users and items from sampled
    neighbourhoods (``fanouts`` per layer, input side first; ``sampled_rescale``; ``sampler``:
    graphrec's vectorised ``fast`` sampler or DGL's ``dgl``), so an epoch
    is linear in the interactions (:mod:`graphrec.graph.sampling`); evaluation always uses
    full propagation.
    """

    name = "lightgcn"
    distributed_loss = "rows"  # BPR and L2 are means over the batch rows
    default_config = {
        "n_layers": 3,
        "reg_weight": 1e-4,
        "ui_block": "lightgcn_conv",
        # 'full': every batch propagates over the whole graph; 'sampled': over sampled neighbourhoods
        "propagation": "full",
        # in-edges kept per node and layer with propagation=sampled: null (10 each), k, or one per layer
        "fanouts": None,
        # sampled messages into a node x (full degree / kept edges): an unbiased estimate of the full sum
        "sampled_rescale": True,
        # propagation=sampled: 'fast' (vectorised torch sampler on the model's device, with replacement where
        # degree > fan-out) or 'dgl' (DGL's MultiLayerNeighborSampler on the CPU, without replacement)
        "sampler": "fast",
        # propagation=sampled only: row-wise (sparse) gradients and SparseAdam (lazy Adam: a step updates only
        # the batch's rows), so a step does not cost O((users + items) x d); for 10^5+ items
        "sparse_embeddings": False,
    }
    block_slots = {"ui_block": "ui_conv"}

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        super().__init__(dataset, config)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, self.embedding_size)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, self.embedding_size)))
        self.propagation = LightGCNPropagation(int(config["n_layers"]), conv=self.make_block("ui_block"))
        self.reg_weight = float(config["reg_weight"])
        self.propagation_mode = check_propagation(config.get("propagation", "full"), self.name)
        self.fanouts = resolve_fanouts(config.get("fanouts"), int(config["n_layers"]), self.name)
        self.sampler_kind = check_sampler(config.get("sampler"), self.name)
        self._ui_sampler: UserItemSampler | None = None
        if self.propagation_mode == "sampled" and type(self.propagation.conv) not in (LightGCNConv, LightGCNMeanConv):
            raise GraphrecError(
                f"{self.name}: propagation=sampled needs a weight-free LightGCN layer as ui_block "
                f"(lightgcn_conv or lightgcn_mean_conv), got {config['ui_block']!r}"
            )
        self.sparse_embeddings = bool(config.get("sparse_embeddings", False))
        if self.sparse_embeddings and self.propagation_mode != "sampled":
            raise GraphrecError(f"{self.name}: sparse_embeddings=true needs propagation=sampled (full propagation touches every row)")
        if self.sparse_embeddings and float(config.get("weight_decay", 0.0)) > 0:
            raise GraphrecError(f"{self.name}: sparse_embeddings=true does not support weight_decay (SparseAdam); use reg_weight")

    def make_optimizer(self, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        if self.sparse_embeddings:
            return torch.optim.SparseAdam(list(self.optim_parameters()), lr=lr)
        return super().make_optimizer(lr, weight_decay)

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagation(self.graph, self.user_emb, self.item_emb)

    @property
    def ui_sampler(self) -> UserItemSampler:
        """The user-item neighbour sampler (built on first use; ``sampler``: ``fast`` or ``dgl``)."""
        if self._ui_sampler is None:
            self._ui_sampler = UserItemSampler(
                self.graph, self.fanouts, self.propagation.conv.weight, bool(self.config.get("sampled_rescale", True)), self.sampler_kind
            )
        return self._ui_sampler

    def batch_representations(self, batch: BPRBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, d)`` each: propagated embeddings of the batch's users, positives and negatives."""
        if self.propagation_mode == "sampled":
            u, p, n = self.ui_sampler.batch(self.user_emb, self.item_emb, batch.users, batch.pos, batch.neg, sparse=self.sparse_embeddings)
            return u, p, n
        user, item = self.representations()
        return user[batch.users], item[batch.pos], item[batch.neg]

    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        u, p, n = self.batch_representations(batch)
        bpr = bpr_loss((u * p).sum(1), (u * n).sum(1))
        sp = self.sparse_embeddings
        reg = self.reg_weight * l2_reg(
            lookup(self.user_emb, batch.users, sp), lookup(self.item_emb, batch.pos, sp), lookup(self.item_emb, batch.neg, sp)
        )
        return {"loss": bpr + reg, "bpr": bpr, "reg": reg}
