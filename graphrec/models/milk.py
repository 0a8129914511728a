"""MILK (Bai et al., SIGIR 2024): multimodality invariant learning for items with missing modalities."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from graphrec.blocks.bpr import batch_bpr, l2_reg
from graphrec.blocks.encoders import xavier_linear
from graphrec.blocks.environments import CyclicMixup, invariance_penalty, mix_modalities
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.models.base import check_keys
from graphrec.models.multimodal import MultimodalBaseline
from graphrec.registry import register_model


@register_model("milk")
class MILK(MultimodalBaseline):
    """MILK (SIGIR 2024): aligned modality representations mixed into environments, invariant user preferences.

    * cross-modality alignment: ``c_m = P_m x_m`` (``P_m: d_m -> d`` with bias; ``x_m`` the filled,
      ``feature_norm``-normalised features, trained with the model) and, over the batch's positive
      items that observe both, ``L_align = Σ_{m<m'} MSE(c_m, c_m')``;
    * environments (:class:`~graphrec.blocks.environments.CyclicMixup`): per batch the uniform mixture
      and the ``M`` cyclic shifts of ``λ ~ Dirichlet(alpha)``; item ``j`` in environment ``e`` is
      ``v_j^e = mix_e(c_j)`` (:func:`~graphrec.blocks.environments.mix_modalities`; with
      ``skip_missing`` only over the modalities the item observes, the rest renormalised);
    * scores ``e_uᵀ v_j^0`` (``e_u`` an ID embedding; ``v^0`` the uniform mixture), so an item missing
      modalities is scored from those it has.

    Loss: ``Σ_e BPR_e + penalty_weight · Var_e(BPR_e) + align_weight · L_align + reg_weight · L2(e_u, v^0_{i+}, v^0_{i-})``.
    Shapes: :meth:`representations` -> ``(U, d), (N, d)``.
    """

    name = "milk"
    default_config = {
        **MultimodalBaseline.default_config,
        # the DGMRec authors tune MILK over zeros / mean filling; their features are L2-normalised
        "imputation": "mean",
        "feature_norm": "l2",
        "alpha": 0.2,
        "penalty_weight": 100.0,
        "align_weight": 0.3,
        "reg_weight": 1e-4,
        "skip_missing": True,
        "train_features": True,
    }

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        check_keys("milk", config, positive=("alpha",), non_negative=("penalty_weight", "align_weight", "reg_weight"))
        super().__init__(dataset, config)
        d = self.embedding_size
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, d)))
        self.projections = nn.ModuleDict({m: xavier_linear(self.feature(m).shape[1], d) for m in self.modalities})
        self.environments = CyclicMixup(self.modalities, float(config["alpha"]))
        self.skip_missing = bool(config["skip_missing"])
        self.penalty_weight, self.align_weight = float(config["penalty_weight"]), float(config["align_weight"])
        self.reg_weight = float(config["reg_weight"])

    def modality_reps(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """``(n, M, d)``: ``c_m`` of ``items`` (all items when ``None``)."""
        rows = [self.projections[m](self.feature(m) if items is None else self.feature(m)[items]) for m in self.modalities]
        return torch.stack(rows, dim=1)

    def mixture(self, reps: torch.Tensor, weights: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """``(n, d)`` item representations of one environment's ``(M,)`` weights."""
        available = None
        if self.skip_missing:
            available = self.observed if items is None else self.observed[items]
        return mix_modalities(reps, weights.to(reps.device), available)

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        uniform = torch.full((len(self.modalities),), 1.0 / len(self.modalities), device=self.user_emb.device)
        return self.user_emb, self.mixture(self.modality_reps(), uniform)

    def feature_widths(self) -> dict[str, int]:
        return self.modal_widths()

    @torch.no_grad()
    def new_item_representations(self, new) -> torch.Tensor:
        """``(n, d)``: new items as the uniform mixture of their modality projections (with ``skip_missing``,
        of the modalities they observe; unobserved rows are the training mean, :meth:`new_item_features`)."""
        feats, obs = self.new_item_features(new)
        reps = torch.stack([self.projections[m](feats[m]) for m in self.modalities], dim=1)
        uniform = torch.full((len(self.modalities),), 1.0 / len(self.modalities), device=reps.device)
        return mix_modalities(reps, uniform, obs if self.skip_missing else None)

    def alignment(self, reps: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``Σ_{m<m'} MSE(c_m, c_m')`` over the rows of ``reps`` that observe both modalities."""
        total = reps.new_zeros(())
        obs = self.observed[items]
        for a in range(len(self.modalities)):
            for b in range(a + 1, len(self.modalities)):
                both = obs[:, a] & obs[:, b]
                if both.any():
                    total = total + F.mse_loss(reps[both, a], reps[both, b])
        return total

    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        items = torch.cat([batch.pos, batch.neg])
        reps = self.modality_reps(items)
        n = batch.pos.shape[0]
        local = BPRBatch(batch.users, torch.arange(n, device=items.device), torch.arange(n, 2 * n, device=items.device))
        env_losses, first = [], None
        for weights in self.environments():
            v = self.mixture(reps, weights, items)
            env_losses.append(batch_bpr(self.user_emb, v, local))
            first = v if first is None else first
        risks = torch.stack(env_losses)
        bpr = risks.sum()
        penalty = self.penalty_weight * invariance_penalty(risks)
        align = self.align_weight * self.alignment(reps[:n], batch.pos)
        reg = self.reg_weight * l2_reg(self.user_emb[batch.users], first[:n], first[n:])
        return {"loss": bpr + penalty + align + reg, "bpr": bpr, "penalty": penalty, "align": align, "reg": reg}
