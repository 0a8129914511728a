"""SiBraR (Ganhör et al., RecSys 2024): a single-branch embedding network for missing modalities."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from graphrec.blocks.bpr import bpr_loss
from graphrec.blocks.environments import mix_modalities
from graphrec.blocks.single_branch import SingleBranch
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.models.base import check_keys
from graphrec.models.multimodal import MultimodalBaseline
from graphrec.registry import register_model

#: the name of the ID "modality" (the item ID embedding, always observed)
ID = "id"


@register_model("sibrar")
class SiBraR(MultimodalBaseline):
    """SiBraR (RecSys 2024, item side): the item ID embedding and every content modality through one branch.

    Inputs ``k ∈ {id} ∪ modalities``: ``e_id = g(e_i)``, ``e_m = norm(g(P_m x_m))``
    (:class:`~graphrec.blocks.single_branch.SingleBranch`; ``norm`` = row-wise L2 when ``normalize``).
    Users are ID embeddings. Scores: ``e_uᵀ mean_k e_k`` over all inputs (with ``skip_missing``, over the
    ID and the modalities the item observes, so an item missing every modality is scored from its ID).

    Training samples, per batch row, two distinct inputs ``k1, k2`` (*modality sampling*; with
    ``skip_missing`` among those the positive item observes) and uses ``v = (e_k1 + e_k2) / 2`` for
    the positive and the negative item. Loss: BPR + ``cl_weight`` x the symmetric InfoNCE of the two
    sampled inputs with the row's negative item as the negative (τ = ``temp``):

        ℓ = [-s(p1, p2) + log(e^{s(p1, p2)} + e^{s(p1, n2)})] + [-s(p1, p2) + log(e^{s(p1, p2)} + e^{s(p2, n1)})],
        s(a, b) = aᵀb / τ.

    Shapes: :meth:`representations` -> ``(U, d), (N, d)``.
    """

    name = "sibrar"
    default_config = {
        **MultimodalBaseline.default_config,
        # the DGMRec authors tune SiBraR over zeros / mean filling
        "imputation": "mean",
        "cl_weight": 0.1,
        "temp": 1.0,
        "normalize": True,
        "skip_missing": False,
        "dropout": 0.0,
        "train_features": True,
    }

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        check_keys("sibrar", config, positive=("temp",), non_negative=("cl_weight",), unit=("dropout",))
        super().__init__(dataset, config)
        d = self.embedding_size
        self.add_id_embeddings()
        widths: dict[str, int | None] = {ID: None, **{m: self.feature(m).shape[1] for m in self.modalities}}
        self.single_branch = SingleBranch(widths, d, float(config["dropout"]))
        self.inputs = list(widths)
        ids = torch.ones(self.n_items, 1, dtype=torch.bool)
        self.register_buffer("inputs_observed", torch.cat([ids, self.observed], dim=1), persistent=False)  # (N, 1 + M), ID first
        self.normalize, self.skip_missing = bool(config["normalize"]), bool(config["skip_missing"])
        self.cl_weight, self.temp = float(config["cl_weight"]), float(config["temp"])

    def input_embeddings(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """``(n, 1 + M, d)``: ``e_id`` and ``e_m`` of ``items`` (all items when ``None``)."""
        rows = {ID: self.item_emb if items is None else self.item_emb[items]}
        for m in self.modalities:
            rows[m] = self.feature(m) if items is None else self.feature(m)[items]
        out = self.single_branch(rows)
        if self.normalize:
            out = {k: v if k == ID else F.normalize(v, dim=1) for k, v in out.items()}
        return torch.stack([out[k] for k in self.inputs], dim=1)

    def available(self, items: torch.Tensor | None = None) -> torch.Tensor | None:
        if not self.skip_missing:
            return None
        return self.inputs_observed if items is None else self.inputs_observed[items]

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        reps = self.input_embeddings()
        uniform = torch.full((len(self.inputs),), 1.0 / len(self.inputs), device=reps.device)
        return self.user_emb, mix_modalities(reps, uniform, self.available())

    def feature_widths(self) -> dict[str, int]:
        return self.modal_widths()

    @torch.no_grad()
    def new_item_representations(self, new) -> torch.Tensor:
        """``(n, d)``: an item added after training has no trained ID embedding, so it is the mean of its
        observed content inputs ``e_m`` (cold start, the SiBraR paper's use); an item observing nothing
        gets the mean over all modalities of the training means (:meth:`new_item_features`)."""
        feats, obs = self.new_item_features(new)
        out = self.single_branch({m: feats[m] for m in self.modalities})
        if self.normalize:
            out = {m: F.normalize(v, dim=1) for m, v in out.items()}
        reps = torch.stack([out[m] for m in self.modalities], dim=1)
        uniform = torch.full((len(self.modalities),), 1.0 / len(self.modalities), device=reps.device)
        return mix_modalities(reps, uniform, obs)

    def sample_inputs(self, items: torch.Tensor) -> torch.Tensor:
        """``(B, 2)`` two distinct inputs per row, drawn uniformly (with ``skip_missing``: among the
        ones the item observes; a row observing only its ID gets the ID twice)."""
        k = len(self.inputs)
        if k == 1:
            return torch.zeros(items.shape[0], 2, dtype=torch.long, device=items.device)
        r = torch.rand(items.shape[0], k, device=items.device)
        avail = self.available(items)
        if avail is not None:
            r = torch.where(avail, r, torch.full_like(r, -1.0))
        top = r.topk(2, dim=1)
        pick = top.indices
        return torch.where(top.values[:, 1:] < 0, pick[:, :1], pick)

    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        b = batch.users.shape[0]
        pos, neg = self.input_embeddings(batch.pos), self.input_embeddings(batch.neg)
        pick = self.sample_inputs(batch.pos)
        rows = torch.arange(b, device=pick.device)
        p1, p2, n1, n2 = pos[rows, pick[:, 0]], pos[rows, pick[:, 1]], neg[rows, pick[:, 0]], neg[rows, pick[:, 1]]
        u = self.user_emb[batch.users]
        bpr = bpr_loss((u * (p1 + p2)).sum(1) / 2, (u * (n1 + n2)).sum(1) / 2)
        distinct = pick[:, 0] != pick[:, 1]
        cl = bpr.new_zeros(())
        if distinct.any():
            s = (p1 * p2).sum(1) / self.temp
            s1, s2 = (p1 * n2).sum(1) / self.temp, (p2 * n1).sum(1) / self.temp
            per_row = (torch.logaddexp(s, s1) - s) + (torch.logaddexp(s, s2) - s)
            cl = per_row[distinct].mean()
        cl = self.cl_weight * cl
        return {"loss": bpr + cl, "bpr": bpr, "cl": cl}
