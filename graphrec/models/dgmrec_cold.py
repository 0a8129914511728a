"""``dgmrec_cold``: DGMRec that recommends items without training interactions from their content.

Beyond the paper (off unless this model is chosen; ``dgmrec`` keeps the paper's behaviour).
DGMRec gives an item without training users a preference gate ``ρ = 0`` and an untrained ID
embedding, so a new item's fused representation is small and it never reaches a top-20 list
(docs/results.md). ``dgmrec_cold`` trains DGMRec unchanged and scores every item with no
training interaction (the new items of the new-item setting; items added after training,
``graphrec recommend --new-items``) from a content representation ``c_i`` in DGMRec's final
item space, put on each user's score scale of the old items:

1. **Content representation** (``cold_repr``). ``knn``: the similarity-weighted mean
   of the ID representations ``e_j`` (after DGMRec's user-item propagation) of the item's
   ``cold_k`` nearest old items in feature space (cosine averaged over the modalities both
   observe, :func:`graphrec.graph.content.content_neighbours`), i.e. a non-parametric map from
   content to DGMRec's ID space::

       c_i = Σ_{j ∈ kNN(i)} w_ij e_j,   w_ij = max(sim(i, j), 0) / Σ_l max(sim(i, l), 0)

   ``knn_fused``: the same mean of the neighbours' fused ``z_j``. ``knn_auto`` (default): the source
   (``e_j`` or ``z_j``) and the neighbour count (1, 2, 3, 5 or ``cold_k``) are chosen on the
   validation split with the shift (step 3): the pair whose validation Recall@20 on the items
   without training interactions is highest at its own old-item budget shift (the new-item
   setting keeps the new items' validation interactions, spec 1.5). An item without training
   interactions that observes no modality has no content: it keeps DGMRec's own score (all
   such items would otherwise share one representation and enter a list together).

   ``head``: a learned map (:class:`graphrec.blocks.content_head.ContentHead`) from the item's
   modality encodings (observed or generated) to the same space, trained on old items beside
   DGMRec with stop-gradients (DropoutNet / CLCRec-style content-to-representation training;
   ``L_cold = BPR(<sg(z_u), c_p>, <sg(z_u), c_n>) + cold_mse · mean((c_p − sg(z_p))²)``).
2. **Per-user scale** (``cold_standardize``). A mean of neighbours has a smaller spread than
   any single item, so raw content scores ``<z_u, c_i>`` sit below the old items'. Per user,
   they are standardised to the old items' score distribution and shifted by ``t`` of the
   user's standard deviations::

       score(u, i) = μ_u^old + σ_u^old · (<z_u, c_i> − μ_u^c) / σ_u^c − t σ_u^old

   (``μ^old, σ^old`` over the old items' scores, ``μ^c, σ^c`` over the content scores of the
   training-time cold items, or of leave-self-out content rows of old items when there are none).
   Without standardisation: ``score = <z_u, c_i> − t σ`` (σ over all users' old-item scores).
   Old items keep DGMRec's ``<z_u, z_i>``.
3. **Offset** ``t`` (``cold_calibration``): chosen once, after training (before the test
   evaluation), on the validation split: the smallest ``t`` (the most room for new items) whose
   old-item cost stays within ``cold_tolerance`` (2 %) of plain DGMRec's old-item Recall@20.
   ``cold_budget: expected`` (default): the cost is the *expected* loss computed from every
   user's score margins and the rank-pooled value of an old item near rank 20, plus
   ``cold_margin`` (1) standard deviations of its noise on a split of the validation split's
   size (:mod:`graphrec.models.cold_budget`; no evaluation per step). ``cold_budget: recall``
   (the earlier rule): the drop of old-item validation Recall@20 itself, by bisection (about 10
   evaluations; :func:`graphrec.models.cold_offset.choose_shift`). With ``knn_auto`` once per
   candidate, 10 candidates. ``t`` is saved with the weights (with ``knn_auto`` beside the chosen
   source and neighbour count, buffer ``cold_choice``).

During training, validation scores every item as plain DGMRec (the cold rows are not shown),
so the best epoch, and with the kNN representations every weight, are those of plain ``dgmrec``
with the same seed. ``cold_scoring: false`` scores a checkpoint as plain DGMRec
(``graphrec evaluate CKPT --set cold_scoring=false``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from graphrec.blocks.bpr import bpr_loss
from graphrec.blocks.content_head import ContentHead
from graphrec.data.catalogue import NewItems
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.errors import GraphrecError
from graphrec.graph.content import content_neighbours, neighbour_weights
from graphrec.models.cold_budget import choose_shift_expected, old_cost
from graphrec.models.cold_offset import affine_rows, user_affine
from graphrec.models.cold_offset import choose_shift as choose_recall_shift
from graphrec.models.dgmrec import DGMRec
from graphrec.registry import register_model

REPRS = ("knn", "knn_fused", "head", "knn_auto")
#: how calibrate() measures the old-item cost of a shift
BUDGETS = ("expected", "recall")
#: neighbour counts ``knn_auto`` tries besides ``cold_k``
AUTO_K = (1, 2, 3, 5)
#: sources of the kNN representations (``cold_choice[0]``): DGMRec's ID representations e, its fused z
SOURCES = ("ie", "zi")


@register_model("dgmrec_cold")
class DGMRecCold(DGMRec):
    """DGMRec scoring items that have no training interaction from their content (beyond the paper)."""

    name = "dgmrec_cold"
    #: config keys ``graphrec evaluate --set`` may change besides the shared evaluation keys
    eval_keys = ("cold_scoring",)
    default_config: dict[str, Any] = {
        **DGMRec.default_config,
        # content representation of items without interactions: knn (nearest old items' ID
        # representations), knn_fused (their fused z), knn_auto (source and neighbour count
        # chosen on validation) or head (a learned map)
        "cold_repr": "knn_auto",
        "cold_k": 10,
        # cold_repr=head only: weight of its loss, of its regression term, its hidden width
        "cold_weight": 1.0,
        "cold_mse": 1.0,
        "cold_hidden": 256,
        # score items without interactions from their content (false: plain DGMRec's scores, same weights)
        "cold_scoring": True,
        # put content scores on each user's old-item score scale
        "cold_standardize": True,
        # choose the shift t after training on the validation split: the most exposure of new items
        # that keeps the old items' validation Recall@20 within this relative loss of plain DGMRec's
        "cold_calibration": True,
        "cold_tolerance": 0.02,
        # how the old-item cost of a shift is measured on validation: expected (from every user's
        # score margins and the rank-pooled value of an old item, graphrec.models.cold_budget) or
        # recall (the drop of old-item validation Recall@20 itself, the earlier rule)
        "cold_budget": "expected",
        # cold_budget=expected: keep this many standard deviations of the cost's noise below the budget
        "cold_margin": 1.0,
    }

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        super().__init__(dataset, config)
        self.cold_repr = str(config["cold_repr"])
        if self.cold_repr not in REPRS:
            raise GraphrecError(f"'cold_repr' must be one of {', '.join(REPRS)}, got '{self.cold_repr}'")
        if int(config["cold_k"]) < 1:
            raise GraphrecError(f"'cold_k' must be at least 1, got {config['cold_k']}")
        if not 0.0 <= float(config["cold_tolerance"]) <= 1.0:
            raise GraphrecError(f"'cold_tolerance' must be in [0, 1], got {config['cold_tolerance']}")
        if str(config["cold_budget"]) not in BUDGETS:
            raise GraphrecError(f"'cold_budget' must be one of {', '.join(BUDGETS)}, got '{config['cold_budget']}'")
        if not float(config["cold_margin"]) >= 0.0:
            raise GraphrecError(f"'cold_margin' must be at least 0, got {config['cold_margin']}")
        d = self.embedding_size
        if self.cold_repr == "head":
            if int(config["cold_hidden"]) < 1:
                raise GraphrecError(f"'cold_hidden' must be at least 1, got {config['cold_hidden']}")
            with torch.random.fork_rng(devices=[]):  # DGMRec's own random draws stay those of plain dgmrec
                torch.manual_seed(int(config.get("seed", 2024)) + 7919)
                self.cold_head = ContentHead(2 * len(self.modalities) * d, d, int(config["cold_hidden"]))
        counts = np.bincount(dataset.train[:, 1], minlength=dataset.n_items)
        self._observed = np.stack([~self.missing_np[m] for m in self.modalities], axis=1)
        # items without a training interaction; those with at least one observed modality are scored
        # from content, the others (nothing is known about them) keep DGMRec's own score
        self.register_buffer("untrained", torch.from_numpy(counts == 0), persistent=False)
        self.register_buffer("cold_items", torch.from_numpy((counts == 0) & self._observed.any(axis=1)), persistent=False)
        self.register_buffer("cold_offset", torch.zeros(()))  # the shift t, saved with the weights
        # neighbours of the cold items, keyed on what they depend on (_neighbour_key)
        self._neighbours: tuple[torch.Tensor, torch.Tensor] | None = None
        self._neighbours_key: tuple | None = None
        # (source, k) of the kNN representation: source 0 = e (knn), 1 = z (knn_fused); knn_auto
        # chooses it on validation; saved with the weights
        src = 1 if self.cold_repr == "knn_fused" else 0
        self.register_buffer("cold_choice", torch.tensor([src, int(config["cold_k"])], dtype=torch.long))
        # false while training (validation scores as plain DGMRec); a buffer, so that checkpoints
        # and distributed ranks carry it
        self.register_buffer("cold_active", torch.ones((), dtype=torch.bool))
        self._last: dict[str, Any] | None = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the cold_active buffer existed score new items from content
        state_dict.setdefault(prefix + "cold_active", torch.ones((), dtype=torch.bool))
        state_dict.setdefault(prefix + "cold_choice", self.cold_choice.clone())  # written before knn_auto
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ content representation
    def _head(self, g: dict[str, torch.Tensor], s: dict[str, torch.Tensor], rows=None) -> torch.Tensor:
        parts = []
        for m in self.modalities:
            gm, sm = g[m].detach(), s[m].detach()
            parts += [gm if rows is None else gm[rows], sm if rows is None else sm[rows]]
        return self.cold_head(torch.cat(parts, dim=1))

    def _table(self) -> tuple[dict[str, torch.Tensor], np.ndarray]:
        """Feature rows of every item (observed rows are the dataset's) and ``(N, M)`` observed flags."""
        return {m: self.raw[m].detach().cpu() for m in self.modalities}, self._observed

    def _knn(self, query: dict[str, torch.Tensor], observed: np.ndarray, exclude_self: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, k)`` nearest old items of query items and their weights (``exclude_self``: queries are old items)."""
        table, obs = self._table()
        k = self._k()
        old = ~self.untrained.cpu().numpy()
        idx, sim = content_neighbours(query, observed, table, obs, k + int(exclude_self), candidates=old)
        if exclude_self:
            idx, sim = idx[:, 1:], sim[:, 1:]
        return idx, neighbour_weights(sim)

    def _k(self) -> int:
        """Neighbour count of the kNN representations (``knn_auto``: the chosen one)."""
        return int(self.cold_choice[1]) if self.cold_repr == "knn_auto" else int(self.config["cold_k"])

    def _neighbour_key(self, rows: torch.Tensor) -> tuple:
        """What the cold items' neighbours depend on: the query rows, ``k``, which items are old,
        the observed flags and the feature rows (digests of their contents)."""
        import hashlib

        def h(a) -> str:
            return hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=16).hexdigest()

        feats = tuple((m, h(x.detach().cpu().numpy())) for m, x in self.raw.items())
        return (h(rows.cpu().numpy()), self._k(), h(self.untrained.cpu().numpy()), h(self._observed), feats)

    def _transfer(self, zi: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        w = w.to(zi.device, zi.dtype)
        out = (w.unsqueeze(2) * zi[idx.to(zi.device)]).sum(dim=1)
        none = w.sum(dim=1) == 0  # no observed modality shared with any old item: the mean old item
        if none.any():
            out[none] = zi[~self.untrained].mean(dim=0)
        return out

    def _source(self, out: dict[str, Any]) -> torch.Tensor:
        """``(N, d)`` rows the kNN representations mix: the ID representations ``e_j`` after the
        user-item propagation (``knn``), or the fused ``z_j`` (``knn_fused``)."""
        if self.cold_repr == "knn_auto":
            return out[SOURCES[int(self.cold_choice[0])]]
        return out["ie"] if self.cold_repr == "knn" else out["zi"]

    def _content_rows(self, out: dict[str, Any], rows: torch.Tensor) -> torch.Tensor:
        """``(len(rows), d)`` content representations of catalogue items ``rows`` (cold items)."""
        if self.cold_repr == "head":
            return self._head(out["g"], out["s"], rows)
        key = self._neighbour_key(rows)
        if self._neighbours is None or self._neighbours_key != key:
            r = rows.cpu().numpy()
            table, obs = self._table()
            self._neighbours = self._knn({m: x[r] for m, x in table.items()}, obs[r])
            self._neighbours_key = key
        return self._transfer(self._source(out), *self._neighbours)

    def _reference_rows(self, out: dict[str, Any], c: torch.Tensor) -> torch.Tensor:
        """Content rows whose score distribution standardises content scores: the cold items' own,
        or (fewer than 2 cold items) leave-self-out content rows of up to 1,000 old items."""
        if c.shape[0] >= 2:
            return c
        old = torch.nonzero(~self.untrained).squeeze(1)
        sample = old[torch.linspace(0, len(old) - 1, min(1000, len(old))).long()]
        if self.cold_repr == "head":
            return self._head(out["g"], out["s"], sample)
        r = sample.cpu().numpy()
        table, obs = self._table()
        return self._transfer(self._source(out), *self._knn({m: x[r] for m, x in table.items()}, obs[r], exclude_self=True))

    # ------------------------------------------------------------------ training
    def propagate(self, graph, fuse: bool = True):
        out = super().propagate(graph, fuse=fuse)
        self._last = out
        return out

    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        losses = super().loss(batch)
        f, self._last = self._last, None
        w = float(self.config["cold_weight"])
        if self.cold_repr == "head" and w > 0 and f is not None:
            with torch.no_grad():  # the loss propagates without step 6: fuse the batch's rows only
                u, p, mods = batch.users, batch.pos, self.modalities
                zu = self.fusion(f["ue"][u], {m: f["GU"][m][u] for m in mods}, {m: f["SU"][m][u] for m in mods})
                zi_p = self.fusion(f["ie"][p], {m: f["G"][m][p] for m in mods}, {m: f["S"][m][p] for m in mods})
            c_p = self._head(f["g"], f["s"], batch.pos)
            c_n = self._head(f["g"], f["s"], batch.neg)
            cold = bpr_loss((zu * c_p).sum(1), (zu * c_n).sum(1))
            cold = cold + float(self.config["cold_mse"]) * F.mse_loss(c_p, zi_p)
            losses["cold"] = w * cold
            losses["loss"] = losses["loss"] + losses["cold"]
        return losses

    # ------------------------------------------------------------------ scoring
    def _scoring(self, out: dict[str, Any] | None = None) -> tuple[torch.Tensor, ...]:
        """``(z_u, z_i, c, a, b, s)``: DGMRec's representations, the cold items' content rows and the
        per-user map ``score = a_u <z_u, c> + b_u − t s_u`` of content scores
        (:func:`graphrec.models.cold_offset.user_affine`). ``out``: :meth:`propagate`'s result on the
        inference graph when the caller has it (it depends on the weights only, not on ``cold_choice``)."""
        if out is None:
            out = self.propagate(self.infer_graph)
        self._last = None
        rows = torch.nonzero(self.cold_items).squeeze(1)
        c = self._content_rows(out, rows)
        a, b, s = user_affine(out["zu"], out["zi"], ~self.untrained, self._reference_rows(out, c),
                              bool(self.config["cold_standardize"]))
        return out["zu"], out["zi"], c, a, b, s

    def _cold_on(self) -> bool:
        return bool(self.config.get("cold_scoring", True)) and bool(self.cold_active)

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U, 2d+1)`` and ``(N, 2d+1)`` (:func:`graphrec.models.cold_offset.affine_rows`): old items
        score ``<z_u, z_i>``, cold items ``a_u <z_u, c_i> + b_u − t s_u``; ``(U, d)``, ``(N, d)`` as plain DGMRec
        with ``cold_scoring: false`` or while training."""
        if not self._cold_on():
            return super().representations()
        zu, zi, c, a, b, s = self._scoring()
        return affine_rows(zu, zi, self.cold_items, c, a, b, s, float(self.cold_offset))

    def before_evaluation(self, trainer, split: str) -> None:
        super().before_evaluation(trainer, split)
        if split == "valid":  # model selection during training: plain DGMRec's scores
            self.cold_active.fill_(False)
        elif split == "test":  # after training, before the test evaluation
            self.cold_active.fill_(True)
            if self.config.get("cold_scoring", True) and self.config.get("cold_calibration", True):
                self.calibrate(trainer.dataset, int(self.config.get("eval_batch_size", 2048)))

    @torch.no_grad()
    def calibrate(self, dataset: RecDataset, batch_size: int = 2048) -> dict[str, Any]:
        """Set the shift ``t`` of cold items' scores from the validation split (``cold_budget``:
        :func:`graphrec.models.cold_budget.choose_shift_expected` or
        :func:`graphrec.models.cold_offset.choose_shift`; reference = plain DGMRec's scores).

        With ``cold_repr: knn_auto`` also the source and neighbour count (``cold_choice``): every
        candidate gets its own shift, and the one whose validation Recall@20 on the cold items is
        highest wins (ties: the earlier candidate, the default ``(e, cold_k)`` first). Returns
        ``{"t", "reference", "table"}`` (and with ``cold_budget: expected`` ``"expected", "sd"``), with
        ``knn_auto`` also ``"choice": (source, k)`` and ``"candidates": [{"source", "k", "t",
        "cold_recall", "old_recall"}, ...]``.
        """
        from graphrec.eval.evaluator import Evaluator
        from graphrec.models.base import Scorer
        from graphrec.models.cold_offset import affine_rows

        was = self.training
        self.eval()
        self.cold_active.fill_(True)
        if not bool(self.cold_items.any()):
            self.train(was)
            return {"t": float(self.cold_offset), "table": [], "reference": None}
        old = (~self.untrained).cpu().numpy()
        cold = self.cold_items.cpu().numpy()
        ev = Evaluator(dataset, topk=[20], batch_size=batch_size, groups={"old": old, "cold": cold})
        tol = float(self.config["cold_tolerance"])

        def choose_shift(ev, zu, zi, cold, c, a, b, s, tol):
            if str(self.config["cold_budget"]) == "recall":
                return choose_recall_shift(ev, zu, zi, cold, c, a, b, s, tol)
            cost = old_cost(*affine_rows(zu, zi, cold, c, a, b, s, 0.0), cold, s, dataset, old, "valid", 20, batch_size)
            return choose_shift_expected(cost, tol, float(self.config["cold_margin"]))

        if self.cold_repr != "knn_auto":
            zu, zi, c, a, b, s = self._scoring()
            info = choose_shift(ev, zu, zi, self.cold_items, c, a, b, s, tol)
        else:
            ks = [int(self.config["cold_k"])] + [k for k in AUTO_K if k != int(self.config["cold_k"])]
            best, cands = None, []
            out = self.propagate(self.infer_graph)  # the same for every candidate
            for src in range(len(SOURCES)):
                for k in ks:
                    self.cold_choice.copy_(torch.tensor([src, k]))
                    zu, zi, c, a, b, s = self._scoring(out)
                    got = choose_shift(ev, zu, zi, self.cold_items, c, a, b, s, tol)
                    res = ev.evaluate(Scorer(*affine_rows(zu, zi, self.cold_items, c, a, b, s, got["t"])), "valid")
                    rec = {"source": SOURCES[src], "k": k, "t": got["t"],
                           "cold_recall": float(res.groups.get("cold", {}).get("recall@20", 0.0)),
                           "old_recall": float(res.groups["old"]["recall@20"])}
                    cands.append(rec)
                    if best is None or rec["cold_recall"] > best[0]["cold_recall"]:
                        best = (rec, src, got)
            rec, src, info = best
            self.cold_choice.copy_(torch.tensor([src, rec["k"]]))
            info = {**info, "choice": (rec["source"], rec["k"]), "candidates": cands}
        self.cold_offset.fill_(info["t"])
        self.train(was)
        return info

    @torch.no_grad()
    def new_item_representations(self, new: NewItems) -> torch.Tensor:
        """``(n, 2d+1)`` rows of items added after training, comparable with :meth:`representations`' item rows."""
        if not self._cold_on():  # rows comparable with representations()' plain (U, d) ones
            return super().new_item_representations(new)
        self.eval()
        out = self.propagate(self.infer_graph)
        self._last = None
        if self.cold_repr == "head":
            from graphrec.models.dgmrec_new_items import complete_features

            feats = complete_features(self, new)
            c = self._head(self.general_encoder(feats), self.specific_encoder(feats))
        else:
            q = {m: torch.from_numpy(np.nan_to_num(new.features[m])).float() for m in self.modalities}
            c = self._transfer(self._source(out), *self._knn(q, new.observed))
        rows = torch.cat([torch.zeros_like(c), c, torch.ones_like(c[:, :1])], dim=1)
        none = torch.from_numpy(~new.observed.any(axis=1)).to(c.device)
        if none.any():  # no observed modality: DGMRec's own representation, scored <z_u, z>
            z = super().new_item_representations(new)[none]
            rows[none] = torch.cat([z, torch.zeros_like(z), torch.zeros_like(z[:, :1])], dim=1)
        return rows
