"""CI2MG (ACM MM 2023): inter- and intra-modal generation for missing modalities.

Assembled from blocks (spec section 5; ``docs/models/ci2mg.md`` maps blocks to equations):

========================  ===========================================================
block                     role
========================  ===========================================================
LightGCNPropagation       ID graph: weight-free LightGCN, mean aggregation (eq. 2, ``w_mean``)
Linear Φ_m                projection ``P_m = Φ_m(X_m)`` of the frozen raw features
ModalityAggregation       ``F^U_m``, ``F^V_m``: two-hop user-mediated averages of ``P_m`` (eq. 1)
HypergraphPrototypeConv   ``Q_m``: prototype hypergraph convolution of ``F^V_m`` (eq. 3-5)
SinkhornTransport         OT plans between modalities, ``Q̂_m = (T + ΔT_m) Q_m`` (eq. 6-9)
infonce                   modality-aware contrastive loss between ``Q_m`` and ``Q̂_m`` (eq. 10)
Linear + shared BN        task-guided generation ``Z_m = BN([Q_m; Q̂_m] W_m + b_m)`` (eq. 11)
bpr_loss                  BPR on ``x_u = [Ē_U; norm(F^U_m)...]``, ``x_i = [Ē_I; norm(Z_m)...]`` (eq. 13)
========================  ===========================================================

Everything is full-graph: every batch recomputes all users and items, including the
``N×N`` transport plans (spec 5.2, 10). Losses use the batch's unique positive items
whose modality is observed (spec 5.3).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from graphrec.blocks.bpr import bpr_loss
from graphrec.blocks.hypergraph import HypergraphPrototypeConv
from graphrec.blocks.infonce import infonce
from graphrec.blocks.lightgcn import LightGCNPropagation
from graphrec.blocks.modality_aggregation import ModalityAggregation
from graphrec.blocks.sinkhorn import SinkhornTransport, squared_cost
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.errors import GraphrecError
from graphrec.models.base import RecModel
from graphrec.registry import register_model

CONTRASTIVE_CHOICES = ("paper", "code")
WEIGHTING_CHOICES = ("code", "paper")


def constant_contrastive(q: torch.Tensor, q_hat: torch.Tensor, temperature: float) -> torch.Tensor:
    """The authors' eq. 10: ``a = exp(cos(q_k, q̂_k)/τ)``, loss ``mean_k -log(a / (a + a))``.

    The "negative" is the positive itself, so the value is ``log 2`` and the gradient is 0
    (``reference_compat``). The value is computed as the authors do; its gradient, zero in
    exact arithmetic but float rounding noise (~1e-8) in autograd, is made exactly zero.
    Shapes: ``(n, d), (n, d)`` -> scalar; an empty input gives 0.
    """
    if q.shape[0] == 0:
        return q.sum() * 0.0
    a = torch.exp(F.cosine_similarity(q, q_hat, dim=1) / temperature)
    value = -torch.log(a / (a + a)).mean()
    return value.detach() + 0.0 * a.sum()


@register_model("ci2mg")
class CI2MG(RecModel):
    """CI2MG: prototype hypergraphs + optimal transport generate missing modalities (MM 2023)."""

    name = "ci2mg"
    #: what a runaway loss term means (graphrec.train.loss_watch)
    loss_term_hints: ClassVar[dict[str, str]] = {
        "rec": "CI2MG's reconstruction target P_m = Phi_m(X_m) is trained and not normalised, so the term follows the "
               "scale of the projected features (BatchNorm's shift drifts); validation usually keeps improving "
               "(docs/models/ci2mg.md, 'Reading the loss curves')",
    }
    default_config: dict[str, Any] = {
        # trainer keys. The authors' values (batch 2048, lr 1e-3, stopping 25; spec 5.5) are in the
        # presets configs/ci2mg/*.yaml. These defaults converge in ~200 epochs on the embedded set and
        # get past its early validation peak (docs/models/ci2mg.md): batch 1024, lr 3e-3, stopping 50,
        # at most 300 epochs (the settings of the documented comparisons; bounds `graphrec fit ci2mg`).
        "epochs": 300,
        "train_batch_size": 1024,
        "learning_rate": 3e-3,
        "learning_rate_scheduler": [1.0, 50],
        "stopping_step": 50,
        "eval_step": 1,
        "eval_batch_size": 4096,
        # architecture
        "n_ui_layers": 3,
        "n_hyper_layers": 2,
        "n_prototypes": 64,
        # optimal transport (spec 5.2 step 6)
        "ot_epsilon": 5.0,
        "ot_iterations": 10,
        # 0 = full N x N plan over all items (spec); S > 0 = plan onto S random target items per batch
        "ot_batch_items": 0,
        # false = no inter-modal generation (Table 3's "intra only"): Q̂_m = Q_m, no transport plan
        "inter_modal": True,
        # losses (spec 5.3): L = L_rec + lamb_1 L_s + lamb_2 L_bpr ("code" weighting)
        "lamb_1": 1.0,
        "lamb_2": 1.0,
        "temp": 1.0,
        # eq. 10: "paper" = InfoNCE with in-batch negatives; "code" = the authors' constant M log 2
        "ci2mg_contrastive": "paper",
        # "code": lamb_2 weights BPR, L_rec unweighted; "paper": lamb_2 weights L_rec
        "ci2mg_loss_weighting": "code",
        # false = ΔT_m is a zero buffer, never trained (spec 5.1, the authors' code); true = a trained
        # length-N parameter. Training mode's BatchNorm cancels ΔT's row-broadcast shift, so nothing
        # anchors it: on TikTok it grows into the thousands and L_rec grows further
        # (docs/models/ci2mg.md, "Reading the loss curves")
        "ci2mg_train_delta": False,
        # true = every code-faithful choice: contrastive "code", weighting "code", ΔT never trained
        "reference_compat": False,
    }

    # ------------------------------------------------------------------ construction
    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        if not dataset.modalities:
            raise GraphrecError("ci2mg needs at least one modality feature file (<modality>_feat.npy)")
        for key, choices in (("ci2mg_contrastive", CONTRASTIVE_CHOICES), ("ci2mg_loss_weighting", WEIGHTING_CHOICES)):
            if config.get(key) not in choices:
                raise GraphrecError(f"'{key}' must be one of {', '.join(choices)}, got {config.get(key)!r}")
        for key in ("n_ui_layers", "n_hyper_layers", "ot_iterations", "ot_batch_items"):
            if int(config[key]) < 0:
                raise GraphrecError(f"'{key}' must be >= 0, got {config[key]!r}")
        if int(config["n_prototypes"]) < 1:
            raise GraphrecError(f"'n_prototypes' must be >= 1, got {config['n_prototypes']!r}")
        for key in ("ot_epsilon", "temp"):
            if not float(config[key]) > 0:
                raise GraphrecError(f"'{key}' must be > 0, got {config[key]!r}")
        super().__init__(dataset, config)
        self.reference_compat = bool(config["reference_compat"])
        self.contrastive = "code" if self.reference_compat else str(config["ci2mg_contrastive"])
        self.loss_weighting = "code" if self.reference_compat else str(config["ci2mg_loss_weighting"])
        self.train_delta = bool(config["ci2mg_train_delta"]) and not self.reference_compat
        self.lamb_1, self.lamb_2, self.temp = float(config["lamb_1"]), float(config["lamb_2"]), float(config["temp"])
        self.modalities = list(dataset.modalities)
        d, n = self.embedding_size, self.n_items

        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, d)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n, d)))
        self.lightgcn = LightGCNPropagation(int(config["n_ui_layers"]), weight="w_mean")
        self.aggregation = ModalityAggregation("w_mean")
        self.projections = nn.ModuleDict()
        self.hypergraphs = nn.ModuleDict()
        self.enhance = nn.ModuleDict()
        for k, m in enumerate(self.modalities):
            x = torch.from_numpy(np.ascontiguousarray(dataset.features[m], dtype=np.float32))
            self.register_buffer(f"raw_{k}", x, persistent=False)  # frozen X_m
            self.projections[m] = _xavier_linear(x.shape[1], d)
            self.hypergraphs[m] = HypergraphPrototypeConv(d, int(config["n_prototypes"]), int(config["n_hyper_layers"]))
            self.enhance[m] = _xavier_linear(2 * d, d)
            if len(self.modalities) > 1:
                delta = torch.zeros(n)
                if self.train_delta:
                    self.register_parameter(f"delta_{k}", nn.Parameter(delta))
                else:  # ΔT_m: the authors' never-trained zeros (persistent: the same state-dict keys)
                    self.register_buffer(f"delta_{k}", delta)
        self.bn = nn.BatchNorm1d(d)  # one instance shared by all modalities (spec 5.1)
        self.transport = SinkhornTransport(float(config["ot_epsilon"]), int(config["ot_iterations"]))
        self.use_inter_modal = bool(config["inter_modal"])
        self.ot_batch_items = int(config["ot_batch_items"])
        if 0 < self.ot_batch_items < n:
            gen = torch.Generator().manual_seed(int(config.get("seed", 0)))
            self.register_buffer("ot_eval_columns", torch.randperm(n, generator=gen)[: self.ot_batch_items], persistent=False)
        else:
            self.ot_batch_items = 0
        observed = np.stack([~dataset.missing.missing[m] for m in self.modalities], axis=1)
        self.register_buffer("observed", torch.from_numpy(observed.copy()), persistent=False)  # (N, M) bool

    def raw(self, k: int) -> torch.Tensor:
        return getattr(self, f"raw_{k}")

    def delta(self, k: int) -> torch.Tensor | None:
        return getattr(self, f"delta_{k}", None)

    # ------------------------------------------------------------------ forward
    def _ot_columns(self) -> torch.Tensor | None:
        """Target items of the transport plans: all (None), or a subset when ``ot_batch_items > 0``."""
        if not self.ot_batch_items:
            return None
        if self.training:
            return torch.randperm(self.n_items, device=self.item_emb.device)[: self.ot_batch_items]
        return self.ot_eval_columns

    def inter_modal(self, q: list[torch.Tensor]) -> list[torch.Tensor]:
        """``Q̂_m = (T_m + ΔT_m) Q_m`` with ``T_m = Sinkhorn(‖Σ_{m'≠m} Q_{m'} - Q_m‖²)`` (eq. 6-9).

        The plan is a constant (no gradient); gradients flow into ``Q_m`` through the
        product and, with ``ci2mg_train_delta``, into ``ΔT_m`` (a row-broadcast length-N
        vector, so ``ΔT_m Q_m`` adds one vector to every item). ``ΔT_m`` is added whether
        trained or not: a zero buffer adds exactly 0, and a checkpoint trained with ΔT
        (before the key existed, when that was the default) is evaluated as it was trained.
        One modality (no partner) or ``inter_modal: false`` (the "intra only" ablation): ``Q̂ = Q``.
        """
        if len(q) == 1 or not self.use_inter_modal:
            return list(q)
        cols = self._ot_columns()
        costs = None
        if len(q) == 2 and cols is None:
            # the two directions' costs are transposes of each other: compute the N x N matrix once
            c10 = squared_cost(q[1].detach(), q[0].detach())  # source q_1 -> target q_0 (k = 0)
            costs = [c10, c10.T]
        out = []
        for k, qm in enumerate(q):
            # 2 modalities: the other one; 3+: the sum of the others (spec 5.2 step 6)
            others = [x for j, x in enumerate(q) if j != k]
            source = others[0] if len(others) == 1 else torch.stack(others).sum(0)
            target = qm if cols is None else qm[cols]
            # (N, N) or (N, S), no grad
            plan = self.transport.from_cost(costs[k]) if costs is not None else self.transport(source, target)
            q_hat = plan @ target
            delta = self.delta(k)
            if delta is not None:
                q_hat = q_hat + ((delta if cols is None else delta[cols]) @ target).unsqueeze(0)
            out.append(q_hat)
        return out

    def compute(self) -> dict[str, Any]:
        """All of spec 5.2 for every user and item.

        Returns ``user (U, d(1+M))``, ``item (N, d(1+M))`` and per-modality lists
        ``P``, ``Q``, ``Q_hat``, ``Z`` of ``(N, d)`` tensors.
        """
        user_id, item_id = self.lightgcn(self.graph, self.user_emb, self.item_emb)
        p, fu, q = [], [], []
        for k, m in enumerate(self.modalities):
            pm = self.projections[m](self.raw(k))
            fu_m, fv_m = self.aggregation(self.graph, pm)
            p.append(pm)
            fu.append(fu_m)
            q.append(self.hypergraphs[m](fv_m))
        q_hat = self.inter_modal(q)
        z = [self.bn(self.enhance[m](torch.cat([q[k], q_hat[k]], dim=1))) for k, m in enumerate(self.modalities)]
        user = torch.cat([user_id] + [F.normalize(x, dim=1) for x in fu], dim=1)
        item = torch.cat([item_id] + [F.normalize(x, dim=1) for x in z], dim=1)
        return {"user": user, "item": item, "P": p, "Q": q, "Q_hat": q_hat, "Z": z}

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.compute()
        return out["user"], out["item"]

    # ------------------------------------------------------------------ losses
    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        out = self.compute()
        user, item = out["user"], out["item"]
        u = user[batch.users]
        bpr = bpr_loss((u * item[batch.pos]).sum(1), (u * item[batch.neg]).sum(1))
        pos = torch.unique(batch.pos)
        cl = bpr.new_zeros(())
        rec = bpr.new_zeros(())
        for k in range(len(self.modalities)):
            idx = pos[self.observed[pos, k]]  # P_B^m: in-batch positives with modality m observed
            if idx.numel() == 0:
                continue  # empty index set: the term is 0 (spec 9.3)
            qm, qh = out["Q"][k][idx], out["Q_hat"][k][idx]
            if self.contrastive == "paper":
                cl = cl + infonce(qm, qh, self.temp)
            else:
                cl = cl + constant_contrastive(qm, qh, self.temp)
            rec = rec + F.mse_loss(out["Z"][k][idx], out["P"][k][idx])
        if self.loss_weighting == "code":
            total = rec + self.lamb_1 * cl + self.lamb_2 * bpr
        else:
            total = bpr + self.lamb_1 * cl + self.lamb_2 * rec
        return {"loss": total, "bpr": bpr, "contrastive": cl, "rec": rec}


def _xavier_linear(d_in: int, d_out: int) -> nn.Linear:
    lin = nn.Linear(d_in, d_out)
    nn.init.xavier_uniform_(lin.weight)
    return lin


__all__ = ["CI2MG", "constant_contrastive"]
