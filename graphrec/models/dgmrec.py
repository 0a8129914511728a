"""DGMRec (SIGIR 2025): disentangle modalities, generate the missing ones, refine the item graphs.

Assembled from blocks (spec section 4; ``docs/models/dgmrec.md`` maps blocks to equations):

====================  ==========================================================
block                 role
====================  ==========================================================
LightGCNPropagation   CF branch on the user-item relations (spec 4.2 step 1); layer = ``ui_block``
GeneralEncoder        ``g_m = σ(S tanh(P_m x_m))`` (eq. 1)
SpecificEncoder       ``s_m = σ(Q_m x_m)`` (eq. 1)
PreferenceGate        ``π_u = tanh(W_m e_u)``, ``ρ_i`` = mean over train users (eq. 2-3)
ItemGraphPropagation  ``G_m = Ã_m^L (ρ ⊙ g_m)`` on ``knn_<m>`` + ``refine_<m>`` (eq. 5); step = ``item_graph_block``
UserAggregation       user modality features from interacted items (eq. 6)
CLUB, infonce         disentanglement (eq. 7-8), alignment (eq. 20-21)
FeatureGenerator      general/specific generators (eq. 12-14)
ModalityDecoder       reconstruction and raw-feature generation (eq. 10-11, 15)
ModalityFusion        fused user/item representation (eq. 17-18)
====================  ==========================================================

Per-epoch hooks (spec 4.8): CLUB estimator steps, generation of missing raw features
(written back into the trainable raw tables), and every ``refine_every`` epochs the
refinement of the rows of missing items in each modality graph, stored as directed
``refine_<m>`` edges of the heterograph.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dgl
import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from graphrec.blocks.bpr import bpr_loss
from graphrec.blocks.club import CLUB
from graphrec.blocks.encoders import GeneralEncoder, SpecificEncoder
from graphrec.blocks.fusion import ModalityFusion
from graphrec.blocks.generators import FeatureGenerator, ModalityDecoder, perturb
from graphrec.blocks.infonce import infonce, infonce_rows
from graphrec.blocks.item_graph import ItemGraphPropagation
from graphrec.blocks.lightgcn import LightGCNPropagation
from graphrec.blocks.preference import PreferenceGate
from graphrec.blocks.user_aggregation import UserAggregation
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.errors import GraphrecError
from graphrec.graph.heterograph import build_heterograph
from graphrec.graph.ann import KNN_SEARCH_DEFAULTS, KnnSearch
from graphrec.graph.knn import knn_topk, mask_missing, row_sums, sym_normalize
from graphrec.graph.refinement import refresh_rows
from graphrec.graph.sampling import check_propagation
from graphrec.models.base import RecModel, graphs_deferred
from graphrec.models.dgmrec_sampled import DGMRecSampler, check_sampled_config
from graphrec.registry import register_model


def _fro(x: torch.Tensor) -> torch.Tensor:
    """Frobenius norm, not squared (spec 4.4(b))."""
    return x.norm(p=2)


def _csr_state(a: sp.csr_matrix) -> dict[str, np.ndarray]:
    return {"indptr": a.indptr.copy(), "indices": a.indices.copy(), "data": a.data.copy(), "shape": np.asarray(a.shape)}


def _csr_load(d: dict[str, np.ndarray]) -> sp.csr_matrix:
    return sp.csr_matrix((d["data"], d["indices"], d["indptr"]), shape=tuple(int(s) for s in d["shape"]))


@register_model("dgmrec")
class DGMRec(RecModel):
    """DGMRec: disentangled, generated modalities and refined item graphs (SIGIR 2025)."""

    name = "dgmrec"
    block_slots = {"ui_block": "ui_conv", "item_graph_block": "item_conv"}
    default_config: dict[str, Any] = {
        # trainer keys. The authors use batch 2048-4096 and lr 1e-3 (the presets in
        # configs/dgmrec/ restore them); graphrec's defaults converge in fewer epochs
        # (measured on the synthetic set: docs/results.md)
        "train_batch_size": 1024,
        "learning_rate": 3e-3,
        "learning_rate_scheduler": [0.96, 50],
        "stopping_step": 20,
        # architecture
        "n_ui_layers": 3,
        "n_mm_layers": 1,
        # swappable blocks (docs/extending.md): one user-item layer, one item-item step
        "ui_block": "lightgcn_conv",
        "item_graph_block": "item_graph_conv",
        "knn_k": 10,
        "knn_chunk_size": 2048,
        # exact / approximate kNN search of the builds and refinements (graphrec.graph.ann, docs/scaling.md)
        **KNN_SEARCH_DEFAULTS,
        # loss weights and temperatures (spec names)
        "interModal": 0.01,
        "interModalTemp": 0.4,
        "intraModal": 0.01,
        "intraModalTemp": 0.1,
        "alignBM": 0.01,
        "alignBMTemp": 0.2,
        "recon": 0.1,
        # rows of the reconstruction term (spec 4.4(h)): 'all' items as the authors' code (the targets of items
        # missing m are the rows generation wrote, which can feed back and grow, docs/models/dgmrec.md);
        # 'observed' = only items that observe m (the paper's reading, beyond the spec's default)
        "recon_rows": "all",
        "reg": 0.1,
        "id_reg": 1e-5,
        "sampler": 0.01,
        "additive": 1.0,
        "noise": 0.1,
        # CLUB estimator schedule (spec 4.5)
        "club_steps": 5,
        "club_items": 2048,
        "club_lr": 1e-4,
        # generation and refinement (spec 4.8, 4.9, 9.1)
        "generation": True,
        "refinement": True,
        "refine_every": 5,
        "avg_lambda": 0.8,
        "infer_adj_update": True,
        "train_raw_features": True,
        "generate_fully_missing": False,
        "general_generator_input": "encoder",
        "refined_graph_at_inference": True,
        "refine_rows": "auto",
        "refine_exact": False,
        "refine_sources": "all",
        # training propagation (docs/scaling.md): 'full' propagates the whole graph every batch; 'sampled'
        # computes the batch's rows from sampled neighbourhoods (graphrec.models.dgmrec_sampled) and
        # restricts the whole-table loss terms (reconstruction, CLUB) to the batch's items
        "propagation": "full",
        # propagation=sampled: in-edges kept per user-item layer (null = 10 each, k, or one per n_ui_layers)
        "fanouts": None,
        # propagation=sampled: train items averaged per batch user (eq. 6) and train users per item of the
        # preference gate (eq. 3); -1 = all
        "aggregation_fanout": 10,
        # propagation=sampled: train users per item of the preference gate alone (eq. 3); null = aggregation_fanout,
        # -1 = all (the gate's sampling costs the most accuracy, docs/scaling.md)
        "gate_fanout": None,
        # propagation=sampled: messages into a node x (full degree / kept edges), an unbiased estimate
        "sampled_rescale": True,
        # propagation=sampled: correct every sampled aggregation with the exact one of the epoch's start
        # (control variates, graphrec.models.dgmrec_sampled; one extra full forward per epoch)
        "sampled_control_variate": True,
        # propagation=sampled only: row-wise (sparse) gradients for the ID embedding and trainable raw feature
        # tables, stepped by SparseAdam (lazy Adam: a step updates only the batch's rows), and Adam for every
        # other parameter (graphrec.train.optim.MixedAdam); not with weight_decay
        "sparse_embeddings": False,
    }

    # ------------------------------------------------------------------ construction
    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        if not dataset.modalities:
            raise GraphrecError("dgmrec needs at least one modality feature file (<modality>_feat.npy)")
        for key, choices in (
            ("general_generator_input", ("encoder", "propagated")),
            ("refine_rows", ("auto", "missing", "single")),
            ("refine_sources", ("all", "observed")),
            ("recon_rows", ("all", "observed")),
        ):
            if config.get(key) not in choices:
                raise GraphrecError(f"'{key}' must be one of {', '.join(choices)}, got {config.get(key)!r}")
        self.propagation_mode = check_propagation(config.get("propagation", "full"), "dgmrec")
        super().__init__(dataset, config)
        d = self.embedding_size
        mods = self.modalities
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, d)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, d)))
        self.raw = nn.ParameterDict(
            {m: nn.Parameter(torch.from_numpy(dataset.features[m].copy()), requires_grad=bool(config["train_raw_features"])) for m in mods}
        )
        dims = {m: int(dataset.features[m].shape[1]) for m in mods}
        self.lightgcn = LightGCNPropagation(int(config["n_ui_layers"]), conv=self.make_block("ui_block"))
        self.general_encoder = GeneralEncoder(dims, d)
        self.specific_encoder = SpecificEncoder(dims, d)
        self.preference = PreferenceGate(mods, d)
        self.item_propagation = ItemGraphPropagation(int(config["n_mm_layers"]), conv=self.make_block("item_graph_block"))
        self.user_aggregation = UserAggregation()
        self.fusion = ModalityFusion()
        self.specific_generators = nn.ModuleDict({m: FeatureGenerator(d, d) for m in mods})
        self.general_generators = nn.ModuleDict(
            {m: FeatureGenerator(d * (len(mods) - 1), d) for m in mods} if len(mods) > 1 else {}
        )
        self.decoders = nn.ModuleDict({m: ModalityDecoder(d, dims[m]) for m in mods})
        self.club = nn.ModuleDict({m: CLUB(d, d, d) for m in mods}) if float(config["sampler"]) > 0 else nn.ModuleDict()
        self.club_optimizer: torch.optim.Optimizer | None = None
        miss = dataset.missing
        observed = torch.from_numpy(np.stack([~miss.missing[m] for m in mods], axis=1))
        self.register_buffer("observed", observed, persistent=False)  # (N, M) bool
        self.register_buffer("new_item_mask", torch.from_numpy(dataset.new_items.copy()), persistent=False)
        self.sparse_embeddings = bool(config.get("sparse_embeddings", False))
        if self.sparse_embeddings and self.propagation_mode != "sampled":
            raise GraphrecError("dgmrec: sparse_embeddings=true needs propagation=sampled (full propagation touches every row)")
        if self.sparse_embeddings and float(config.get("weight_decay", 0.0)) > 0:
            raise GraphrecError("dgmrec: sparse_embeddings=true does not support weight_decay (SparseAdam); use id_reg")
        self.batch_sampler: DGMRecSampler | None = None
        if self.propagation_mode == "sampled":
            fanouts, agg, gate = check_sampled_config(self, config)
            self.batch_sampler = DGMRecSampler(
                self, fanouts, agg, bool(config.get("sampled_rescale", True)), bool(config.get("sampled_control_variate", True)),
                gate_fanout=gate, sparse=self.sparse_embeddings,
            )

    @property
    def loss_term_hints(self) -> dict[str, str]:
        """What a runaway loss term means (:mod:`graphrec.train.loss_watch`)."""
        if self.config.get("recon_rows", "all") != "all":
            return {}
        return {"recon": "with recon_rows=all (the authors' objective) the targets of items missing a modality are the "
                         "rows generation wrote, which can feed back and grow; ranking usually survives, exported "
                         "generated features do not (graphrec refine-graph reports their scale); --set "
                         "recon_rows=observed stops it (docs/models/dgmrec.md, 'Reading the loss curves')"}

    def build_graph(self, dataset: RecDataset) -> dgl.DGLGraph:
        """Build the training (and inference) item graphs of spec 4.3 and the heterograph."""
        cfg = self.config
        self.modalities = list(dataset.modalities)
        self._train_pairs = dataset.train
        self.missing_np = {m: dataset.missing.missing[m].copy() for m in self.modalities}
        self.single_np = {m: dataset.missing.only(m) for m in self.modalities}
        self.new_np = dataset.new_items.copy()
        self.new_item_setting = bool(self.new_np.any())
        k, chunk = int(cfg["knn_k"]), int(cfg["knn_chunk_size"])
        self.knn_search = search = KnnSearch.from_config(cfg, self.name)
        self.graphs: dict[str, sp.csr_matrix] = {}
        self.refined: dict[str, np.ndarray] = {}
        self.sums: dict[str, np.ndarray] = {}
        self.infer_graphs: dict[str, sp.csr_matrix] = {}
        self.infer_refined: dict[str, np.ndarray] = {}
        self.infer_sums: dict[str, np.ndarray] = {}
        self.counter = 0
        # built to be loaded (a checkpoint or resume state holds every graph below, get_extra_state): skip the
        # kNN searches (minutes at 10^6 items); empty graphs give the heterograph its relations until
        # set_extra_state replaces every graph, normaliser and flag
        self.graphs_pending = graphs_deferred()
        for m in self.modalities:
            x = dataset.features[m]
            n = x.shape[0]
            if self.graphs_pending:
                self.graphs[m] = sp.csr_matrix((n, n), dtype=np.float32)
            elif self.new_item_setting:
                raw = knn_topk(x, k, chunk_size=chunk, masked=self.new_np, search=search)
                raw_inf = knn_topk(x, k, chunk_size=chunk, search=search)
                # refreshes rebuild rows without masking (spec 4.8), so the cached neighbour
                # normalisers are the unmasked row sums, not those of the masked training graph
                self.graphs[m], self.sums[m] = sym_normalize(raw), row_sums(raw_inf)
                self.infer_sums[m] = row_sums(raw_inf)
                self.infer_graphs[m] = sym_normalize(mask_missing(raw_inf, self.missing_np[m]))
                self.infer_refined[m] = np.zeros(n, dtype=bool)
            else:
                raw = knn_topk(x, k, chunk_size=chunk, search=search)
                self.sums[m] = row_sums(raw)
                self.graphs[m] = sym_normalize(mask_missing(raw, self.missing_np[m]))
                if not cfg["refined_graph_at_inference"]:
                    self.infer_graphs[m] = self.graphs[m].copy()
                    self.infer_refined[m] = np.zeros(n, dtype=bool)
            self.refined[m] = np.zeros(n, dtype=bool)
        self._rebuild_graphs()
        return self.graph

    def _rebuild_graphs(self) -> None:
        """(Re)build the training and inference heterographs, on the CPU (like every graphrec graph)."""
        self.graph = build_heterograph(self.n_users, self.n_items, self._train_pairs, self.graphs, self.refined)
        if self.infer_graphs:
            self.infer_graph = build_heterograph(self.n_users, self.n_items, self._train_pairs, self.infer_graphs, self.infer_refined)
        else:
            self.infer_graph = self.graph

    def optim_parameters(self):
        club = {id(p) for p in self.club.parameters()}
        return [p for p in self.parameters() if id(p) not in club and p.requires_grad]

    def row_tables(self) -> list[nn.Parameter]:
        """The per-row tables a sampled batch reads a few rows of: ``user_emb`` ``(U, d)``, ``item_emb``
        ``(N, d)`` and, with ``train_raw_features``, ``raw[m]`` ``(N, d_m)`` (``sparse_embeddings``)."""
        return [self.user_emb, self.item_emb, *(p for p in self.raw.values() if p.requires_grad)]

    def make_optimizer(self, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        """Adam; with ``sparse_embeddings`` a :class:`~graphrec.train.optim.MixedAdam`: SparseAdam for the
        :meth:`row_tables` (row-sparse gradients), Adam for the rest."""
        if not self.sparse_embeddings:
            return super().make_optimizer(lr, weight_decay)
        from graphrec.train.optim import MixedAdam  # here: graphrec.train imports the evaluator, which imports the models

        tables = {id(p) for p in self.row_tables()}
        params = self.optim_parameters()
        return MixedAdam([p for p in params if id(p) in tables], [p for p in params if id(p) not in tables], lr, weight_decay)

    # ------------------------------------------------------------------ checkpoint state
    def get_extra_state(self) -> dict[str, Any]:
        return {
            "counter": self.counter,
            "graphs": {m: _csr_state(a) for m, a in self.graphs.items()},
            "refined": {m: r.copy() for m, r in self.refined.items()},
            "sums": {m: s.copy() for m, s in self.sums.items()},
            "infer_graphs": {m: _csr_state(a) for m, a in self.infer_graphs.items()},
            "infer_refined": {m: r.copy() for m, r in self.infer_refined.items()},
            "infer_sums": {m: s.copy() for m, s in self.infer_sums.items()},
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.counter = int(state["counter"])
        self.graphs = {m: _csr_load(a) for m, a in state["graphs"].items()}
        self.refined = {m: np.asarray(r, dtype=bool).copy() for m, r in state["refined"].items()}
        self.sums = {m: np.asarray(s).copy() for m, s in state["sums"].items()}
        self.infer_graphs = {m: _csr_load(a) for m, a in state["infer_graphs"].items()}
        self.infer_refined = {m: np.asarray(r, dtype=bool).copy() for m, r in state["infer_refined"].items()}
        self.infer_sums = {m: np.asarray(s).copy() for m, s in state["infer_sums"].items()}
        self.graphs_pending = False
        self._rebuild_graphs()
        if self.batch_sampler is not None:
            # the control variates' history belongs to the state being replaced (a checkpoint, or rank 0's
            # broadcast after its per-epoch hook: graphrec.train.distributed); the next batch recomputes it
            # from the state loaded, so every data-parallel rank holds the history rank 0 computed
            self.batch_sampler.forget_history()

    # ------------------------------------------------------------------ forward
    def _others(self, m: str) -> list[str]:
        """The other modalities in cyclic order after ``m`` (TikTok: t <- [a; v], v <- [t; a], a <- [v; t])."""
        i = self.modalities.index(m)
        n = len(self.modalities)
        return [self.modalities[(i + j) % n] for j in range(1, n)]

    def propagate(self, graph: dgl.DGLGraph, fuse: bool = True) -> dict[str, Any]:
        """Full-graph forward of spec 4.2 steps 1-6 on ``graph``; returns every intermediate.

        ``fuse=False`` skips step 6 (``zu``, ``zi`` for every user and item): the loss fuses
        the batch's rows only.
        """
        ue, ie = self.lightgcn(graph, self.user_emb, self.item_emb)
        out: dict[str, Any] = {"ue": ue, "ie": ie, **{k: {} for k in ("g", "s", "rho", "G", "S", "GU", "SU")}}
        for m, t in self.modality_tables(graph, encoded=True):
            for k in out.keys() & t.keys():
                out[k][m] = t[k]
        if fuse:
            out["zu"], out["zi"] = self.fusion(ue, out["GU"], out["SU"]), self.fusion(ie, out["G"], out["S"])
        return out

    def modality_tables(self, graph: dgl.DGLGraph, encoded: bool = False) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
        """Steps 2-5 of spec 4.2 for one modality at a time: ``(m, {"pi": (U, d), "rho", "G", "S": (N, d),
        "GU", "SU": (U, d)})``, computed when the caller asks for modality ``m``; ``encoded`` adds the
        encoders' outputs ``"g"``, ``"s"`` ``(N, d)``. Without them a caller who keeps only what it needs
        never holds the encoders' outputs and gated rows of every modality at once
        (:meth:`representations`); :meth:`propagate` keeps everything."""
        for m in self.modalities:
            feats = {m: self.raw[m]}
            pi = self.preference.pi(self.user_emb, m)
            rho = self.preference.item_mean(graph, pi)
            t = {"pi": pi, "rho": rho}
            for enc_key, key, encoder in (("g", "G", self.general_encoder), ("s", "S", self.specific_encoder)):
                x = encoder(feats)[m]
                t[key] = self.item_propagation(graph, rho * x, m)  # the gate ρ ⊙ x (PreferenceGate.gate)
                t[key + "U"] = self.user_aggregation(graph, t[key])
                if encoded:
                    t[enc_key] = x
                del x  # without ``encoded``, before the next encoder runs
            yield m, t
            del pi, rho, t  # before the next modality's are computed

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U, d)``, ``(N, d)``: ``propagate(infer_graph)["zu"]``, ``["zi"]`` (the same values), summed one
        modality at a time (:meth:`modality_tables`): with two modalities about ten ``(N, d)`` tables
        alive at the peak instead of :meth:`propagate`'s ~18 (docs/scaling.md, "Memory by stage")."""
        graph = self.infer_graph
        ue, ie = self.lightgcn(graph, self.user_emb, self.item_emb)
        sums: dict[str, torch.Tensor] = {}
        for _, t in self.modality_tables(graph):
            for key in ("G", "S", "GU", "SU"):
                sums[key] = t[key] if key not in sums else sums[key] + t[key]
            del t
        n = len(self.modalities)
        return self.fusion.combine(ue, sums["GU"], sums["SU"], n), self.fusion.combine(ie, sums["G"], sums["S"], n)

    # ------------------------------------------------------------------ losses
    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        """Spec 4.4 losses of one batch.

        Batch-side quantities are gathered once per *distinct* batch user and positive item
        (a TikTok batch of 2,048 rows has about 700 distinct users and 1,350 distinct positives)
        and the InfoNCE terms run on those rows with multiplicities
        (:func:`~graphrec.blocks.infonce.infonce_rows`): the same losses and gradients as on the
        ``B`` rows with duplicates kept (``tests/test_dgmrec_step.py`` checks them against a
        reference), on logit matrices several times smaller.
        """
        cfg = self.config
        u, p, n = batch.users, batch.pos, batch.neg
        B = u.shape[0]
        mods = self.modalities
        losses: dict[str, torch.Tensor] = {}
        uu, inv_u, cnt_u = torch.unique(u, return_inverse=True, return_counts=True)
        pp, inv_p, cnt_p = torch.unique(p, return_inverse=True, return_counts=True)
        U_, P_ = (inv_u, cnt_u), (inv_p, cnt_p)  # (batch row -> distinct row, multiplicity)
        items = torch.unique(torch.cat([p, n]))

        def nce(a, b, t, a_rows, b_rows):
            return infonce_rows(a, b, t, a_rows[0], b_rows[0], a_rows[1], b_rows[1])

        if self.batch_sampler is not None:
            # sampled: the batch's rows only; item tables are indexed through their sorted id lists T, X
            f = self.batch_sampler.forward(uu, pp, n, items)
            ue_U, ie_P, ie_N, GU_U, SU_U = f["ue_U"], f["ie_P"], f["ie_N"], f["GU"], f["SU"]
            dev = ie_N.device

            def at_T(ids):
                return torch.searchsorted(f["T"], ids.cpu()).to(dev)

            def at_X(ids):
                return torch.searchsorted(f["X"], ids.cpu()).to(dev)

            rows_P, rows_N = at_T(pp), at_T(n)
            G_P = {m: f["G"][m][rows_P] for m in mods}
            S_P = {m: f["S"][m][rows_P] for m in mods}
            G_N = {m: f["G"][m][rows_N] for m in mods}
            S_N = {m: f["S"][m][rows_N] for m in mods}
            rows_T = at_X(f["T"])  # T ⊆ X: the raw rows the forward looked up already
            recon_target = {m: f["feats"][m].index_select(0, rows_T) for m in mods}
            ie_N_reg, zero = ie_N, ie_N.sum() * 0.0
        else:
            f = self.propagate(self.graph, fuse=False)
            at_T = at_X = None  # full tables: item ids are rows
            # distinct batch users / positives: index each full table once
            ue_U, ie_P, ie_N = f["ue"][uu], f["ie"][pp], f["ie"][n]
            GU_U = {m: f["GU"][m][uu] for m in mods}
            SU_U = {m: f["SU"][m][uu] for m in mods}
            G_P = {m: f["G"][m][pp] for m in mods}
            S_P = {m: f["S"][m][pp] for m in mods}
            G_N = {m: f["G"][m][n] for m in mods}
            S_N = {m: f["S"][m][n] for m in mods}
            recon_target = {m: self.raw[m] for m in mods}
            ie_N_reg, zero = f["ie"][n], f["ue"].sum() * 0.0  # separate gathers: gradients bit-identical to earlier releases
        zu_u = self.fusion(ue_U, GU_U, SU_U)[inv_u]
        zi_p = self.fusion(ie_P, G_P, S_P)[inv_p]
        zi_n = self.fusion(ie_N, G_N, S_N)
        losses["bpr"] = bpr_loss((zu_u * zi_p).sum(1), (zu_u * zi_n).sum(1))
        reg = float(cfg["id_reg"]) * (_fro(ue_U[inv_u]) + _fro(ie_P[inv_p]) + _fro(ie_N_reg)) / B
        reg = reg + float(cfg["reg"]) * sum(_fro((G_P[m] + S_P[m])[inv_p]) for m in mods) / B
        losses["reg"] = reg
        obs = self.observed[items]  # (|I_B|, M)
        all_obs = items[obs.all(dim=1)]
        sum_GU_U = sum(GU_U[m] for m in mods)
        sum_G_P = sum(G_P[m] for m in mods)

        def rows(ids, at):
            return ids if at is None else at(ids)

        w = float(cfg["interModal"])
        if w > 0 and len(mods) > 1:
            pairs = [(0, 1)] if len(mods) == 2 else [(i, (i + 1) % len(mods)) for i in range(len(mods))]
            t = float(cfg["interModalTemp"])
            obs_X = rows(all_obs, at_X)
            item_term = sum(infonce(f["g"][mods[a]][obs_X], f["g"][mods[b]][obs_X], t) for a, b in pairs)
            user_term = nce(GU_U[mods[0]], GU_U[mods[1]], t, U_, U_)
            losses["inter"] = w * (item_term + user_term)
        w = float(cfg["sampler"])
        if w > 0 and len(self.club):
            losses["club"] = w * sum(self.club[m](f["S"][m], f["G"][m]) for m in mods)  # sampled: the rows of T
        w = float(cfg["intraModal"])
        if w > 0:
            ti, tg = float(cfg["intraModalTemp"]), float(cfg["interModalTemp"])
            ui = nce(ue_U, ie_P, ti, U_, P_) + nce(sum_GU_U, sum_G_P, tg, U_, P_)
            ui = ui + sum(nce(SU_U[m], S_P[m], ti, U_, P_) for m in mods)
            losses["align_ui"] = w * ui
        w = float(cfg["alignBM"])
        if w > 0:
            tb = float(cfg["alignBMTemp"])
            losses["align_bm"] = w * (nce(ie_P, sum_G_P, tb, P_, P_) + nce(ue_U, sum_GU_U, tb, U_, U_))
        w = float(cfg["additive"])
        if w > 0 and cfg["generation"] and self.observed is not None and (~self.observed).any():
            losses["gen"] = w * self._generation_loss(f, items, obs, all_obs, zero, lambda ids: rows(ids, at_T), lambda ids: rows(ids, at_X))
        w = float(cfg["recon"])
        if w > 0:
            noise = float(cfg["noise"])
            # recon_rows 'observed': keep the rows (all items, or T's when sampled) of items that observe m
            observed = None
            if cfg.get("recon_rows", "all") == "observed":
                observed = self.observed if at_T is None else self.observed[f["T"].to(self.observed.device)]
            rec = None
            for j, m in enumerate(mods):
                x_hat = self.decoders[m](f["G"][m].detach(), f["S"][m].detach(), noise)
                if observed is None:
                    term = F.mse_loss(x_hat, recon_target[m])
                else:
                    keep = observed[:, j]
                    term = F.mse_loss(x_hat[keep], recon_target[m][keep]) if bool(keep.any()) else x_hat.sum() * 0.0
                rec = term if rec is None else rec + term
            losses["recon"] = w * rec
        losses["loss"] = sum(v for v in losses.values())
        return losses

    def _generation_loss(self, f, items, obs, all_obs, zero, at_T, at_X) -> torch.Tensor:
        """Spec 4.4(g): generators fitted on in-batch items that observe the modality.

        ``at_T`` / ``at_X`` map item ids to rows of ``f``'s ``G`` / ``s``, ``rho`` tables (identity in full mode)."""
        noise = float(self.config["noise"])
        total = zero
        obs_T = at_T(all_obs)
        for j, m in enumerate(self.modalities):
            idx = at_X(items[obs[:, j]])
            if len(idx):
                total = total + F.mse_loss(f["s"][m][idx], self.specific_generators[m](perturb(f["rho"][m][idx], noise)))
            if len(self.modalities) > 1 and len(all_obs):
                src = torch.cat([f["G"][o][obs_T] for o in self._others(m)], dim=1)
                total = total + F.mse_loss(f["G"][m][obs_T], self.general_generators[m](perturb(src, noise)))
        return total

    # ------------------------------------------------------------------ hooks (spec 4.8, 4.9)
    def on_train_start(self, trainer) -> None:
        if len(self.club):
            self.club_optimizer = torch.optim.Adam(self.club.parameters(), lr=float(self.config["club_lr"]))

    def on_epoch_start(self, trainer, epoch: int) -> None:
        if len(self.club) and self.club_optimizer is not None:
            self.train_club()
        self.counter += 1
        if self.has_missing():
            if self.config["generation"]:
                rows = {m: self.generation_rows(m, new=False) for m in self.modalities}
                self.write_generated(self.graph, rows)
            every = int(self.config["refine_every"])
            if self.config["refinement"] and every > 0 and self.counter % every == 0:
                self.refine(inference=False)
        if self.batch_sampler is not None and self.batch_sampler.control_variate:
            self.batch_sampler.refresh()  # after generation / refinement: the epoch's exact tables

    def get_epoch_state(self) -> Any:
        """Sampled propagation with control variates: the epoch's history tables (``refresh`` at its start)."""
        sampler = self.batch_sampler
        if sampler is None or not sampler.control_variate or sampler.history is None:
            return None
        return {"history": sampler.history}

    def set_epoch_state(self, state: Any) -> None:
        if state is None:
            return
        if self.batch_sampler is None:
            raise GraphrecError("the saved run's mid-epoch state has sampled-propagation tables; this DGMRec propagates fully")
        dev = self.item_emb.device
        self.batch_sampler.history = {k: [t.to(dev) for t in v] if isinstance(v, list) else
                                      ({m: t.to(dev) for m, t in v.items()} if isinstance(v, dict) else v.to(dev))
                                      for k, v in state["history"].items()}

    def before_evaluation(self, trainer, split: str) -> None:
        if not (self.new_item_setting and split == "valid" and self.has_missing()):
            return
        if self.config["generation"]:
            rows = {m: self.generation_rows(m, new=True) for m in self.modalities}
            self.write_generated(self.infer_graph, rows)
        every = int(self.config["refine_every"])
        if self.config["refinement"] and self.config["infer_adj_update"] and every > 0 and self.counter % every == 0:
            self.refine(inference=True)

    def has_missing(self) -> bool:
        return any(v.any() for v in self.missing_np.values())

    def train_club(self) -> None:
        """``club_steps`` estimator steps on ``club_items`` random items, x = s_m, y = g_m (spec 4.5)."""
        steps, n_items = int(self.config["club_steps"]), int(self.config["club_items"])
        for _ in range(steps):
            idx = torch.randperm(self.n_items, device=self.item_emb.device)[:n_items]
            with torch.no_grad():
                feats = {m: self.raw[m][idx] for m in self.modalities}
                g, s = self.general_encoder(feats), self.specific_encoder(feats)
            self.club_optimizer.zero_grad(set_to_none=True)
            loss = sum(self.club[m].learning_loss(s[m], g[m]) for m in self.club)
            from graphrec.train.interrupt import backward  # here: graphrec.train imports the evaluator, which imports the models

            backward(loss)
            self.club_optimizer.step()

    def generation_rows(self, m: str, new: bool) -> np.ndarray:
        """Items whose raw ``m`` features are overwritten: Ω_m^1 (or Ω_m with ``generate_fully_missing``),
        restricted to old items during training and to new items at inference (new-item setting)."""
        sel = self.missing_np[m] if self.config["generate_fully_missing"] else self.single_np[m]
        if self.new_item_setting:
            sel = sel & (self.new_np if new else ~self.new_np)
        return np.flatnonzero(sel)

    @torch.no_grad()
    def generate(self, graph: dgl.DGLGraph, noise: float | None = None) -> dict[str, torch.Tensor]:
        """Generated raw features ``{m: (N, d_m)}`` for every item (spec 4.8 step 3, eq. 12-15)."""
        noise = float(self.config["noise"]) if noise is None else noise
        g = self.general_encoder({m: self.raw[m] for m in self.modalities})
        _, rho = self.preference(graph, self.user_emb)
        if self.config["general_generator_input"] == "propagated":
            src_g = {m: self.item_propagation(graph, rho[m] * g[m], m) for m in self.modalities}
        else:
            src_g = g
        out = {}
        for m in self.modalities:
            if len(self.modalities) > 1:
                gen_g = self.general_generators[m](torch.cat([src_g[o] for o in self._others(m)], dim=1))
            else:
                gen_g = g[m]
            G_hat = self.item_propagation(graph, gen_g, m)
            S_hat = self.item_propagation(graph, self.specific_generators[m](rho[m]), m)
            out[m] = self.decoders[m](G_hat, S_hat, noise)
        return out

    @torch.no_grad()
    def write_generated(self, graph: dgl.DGLGraph, rows: dict[str, np.ndarray]) -> None:
        if not any(len(r) for r in rows.values()):
            return
        gen = self.generate(graph)
        for m, r in rows.items():
            if len(r):
                idx = torch.from_numpy(r).to(self.raw[m].device)
                self.raw[m].data[idx] = gen[m][idx]

    def refinement_rows(self, m: str, inference: bool) -> np.ndarray:
        mode = self.config["refine_rows"]
        if mode == "auto":
            mode = "missing" if len(self.modalities) <= 2 else "single"
        sel = self.missing_np[m] if mode == "missing" else self.single_np[m]
        if self.new_item_setting:
            sel = sel & (self.new_np if inference else ~self.new_np)
        return np.flatnonzero(sel)

    @torch.no_grad()
    def refine(self, inference: bool = False) -> None:
        """Refresh the rows of missing items in every modality graph (spec 4.8 step 4) and rebuild the heterograph."""
        lam = float(self.config["avg_lambda"])
        graphs, refined, sums = (
            (self.infer_graphs, self.infer_refined, self.infer_sums) if inference else (self.graphs, self.refined, self.sums)
        )
        for m in self.modalities:
            rows = self.refinement_rows(m, inference)
            if not len(rows):
                continue
            cands = ~self.missing_np[m] if self.config["refine_sources"] == "observed" else None
            graphs[m], sums[m] = refresh_rows(
                graphs[m],
                self.raw[m].detach().cpu(),
                rows,
                int(self.config["knn_k"]),
                lam,
                sums[m],
                exact=bool(self.config["refine_exact"]),
                candidates=cands,
                chunk_size=int(self.config["knn_chunk_size"]),
                search=self.knn_search,
            )
            if lam > 0:  # lam = 0 blends nothing in: the rows keep their knn edges, no refinement edges
                refined[m][rows] = True
        self._rebuild_graphs()

    # ------------------------------------------------------------------ items added after training
    def feature_widths(self) -> dict[str, int]:
        return {m: int(self.raw[m].shape[1]) for m in self.modalities}

    def new_item_representations(self, new) -> torch.Tensor:
        """``(n, d)`` representations of items added after training (:mod:`graphrec.models.dgmrec_new_items`)."""
        from graphrec.models.dgmrec_new_items import new_item_representations

        return new_item_representations(self, new)

    # ------------------------------------------------------------------ export (refine-graph, retrieval)
    @torch.no_grad()
    def generated_features(self, noise: float = 0.0) -> dict[str, np.ndarray]:
        """``{m: (N, d_m)}`` generated raw features of **every** item (no noise by default),
        using the inference graphs. Rows of items that have ``m`` are generated too (for retrieval)."""
        self.eval()
        return {m: x.cpu().numpy() for m, x in self.generate(self.infer_graph, noise=noise).items()}

    @torch.no_grad()
    def export_refined(self, lam: float | None = None) -> dict[str, dict[str, Any]]:
        """Generate the features of every item missing a modality and refine their graph rows.

        Returns ``{m: {"features": (N, d_m) with generated rows, "generated": (N,) bool,
        "graph": (N, N) CSR Ã_m, "refined": (N,) bool}}`` starting from the inference graphs.
        Items missing every modality are included (general input = encoder output of the
        imputed other modalities, spec 4.11).
        """
        lam = float(self.config["avg_lambda"]) if lam is None else float(lam)
        gen = self.generated_features()
        out: dict[str, dict[str, Any]] = {}
        for m in self.modalities:
            rows = np.flatnonzero(self.missing_np[m])
            x = self.raw[m].detach().cpu().numpy().copy()
            x[rows] = gen[m][rows]
            graphs, refined, sums = (
                (self.infer_graphs, self.infer_refined, self.infer_sums) if self.infer_graphs else (self.graphs, self.refined, self.sums)
            )
            if m not in sums:  # inference graph kept as the initial masked copy
                sums = self.sums
            cands = ~self.missing_np[m] if self.config["refine_sources"] == "observed" else None
            graph, _ = refresh_rows(
                graphs[m], torch.from_numpy(x), rows, int(self.config["knn_k"]), lam, sums[m],
                exact=bool(self.config["refine_exact"]), candidates=cands, chunk_size=int(self.config["knn_chunk_size"]),
                search=self.knn_search,
            )
            ref = refined[m].copy()
            if lam > 0:
                ref[rows] = True
            out[m] = {"features": x, "generated": self.missing_np[m].copy(), "graph": graph, "refined": ref}
        return out
