"""Full-ranking evaluation (spec 2.4), batched over users with bounded memory.

For every evaluated user (the users of the split), all N items are scored, the
user's training items are excluded (and, by default, validation items when
testing — set ``eval_mask_valid_in_test: false`` for the authors' protocol), the
top ``max(topk)`` items are taken with ``torch.topk`` and compared with the user's
positives in the split. Memory is ``O(eval_batch_size x N)``, or
``O(eval_batch_size x eval_item_chunk)`` when items are scored in chunks whose top-K lists
are merged (same result up to the order of exactly tied scores).

:meth:`Evaluator.evaluate_sums` evaluates any subset of the users and returns unnormalised
sums and counts (:class:`EvalSums`); merging the sums of disjoint subsets gives the result of
all users (data-parallel evaluation, :mod:`graphrec.train.distributed`).

Per-group results (e.g. items missing k modalities, new vs old items) restrict each
user's positives to the group's items: users with no positive in the group are
skipped, hits count only items of the group, and |T_u| is the number of the user's
positives inside the group. The ranking itself is always over all items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from graphrec.data.dataset import RecDataset
from graphrec.data.interactions import pair_matrix
from graphrec.eval.metrics import METRICS, per_user_metrics
from graphrec.models.base import Scorer
from graphrec.models.topk import top_k


@dataclass
class EvalResult:
    """Mean metrics over evaluated users (``{'recall@20': 0.1, ...}``), per group as well."""

    split: str
    metrics: dict[str, float]
    n_users: int
    groups: dict[str, dict[str, float]] = field(default_factory=dict)
    group_users: dict[str, int] = field(default_factory=dict)
    #: with ``per_user=names``: the evaluated users ``(U,) int64`` and ``{name: (U,) float64}``
    users: np.ndarray | None = None
    per_user: dict[str, np.ndarray] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "n_users": self.n_users,
            "metrics": self.metrics,
            "groups": self.groups,
            "group_users": self.group_users,
        }


@dataclass
class EvalSums:
    """Unnormalised metric sums and user counts of some of a split's users (see :meth:`merge`)."""

    split: str
    sums: dict[str, float]
    n_users: int
    gsums: dict[str, dict[str, float]]
    gcount: dict[str, int]
    users: np.ndarray | None = None  # with ``per_user``: the users, in the order of ``per_user``'s values
    per_user: dict[str, np.ndarray] = field(default_factory=dict)  # {name: (U,) float64}; not merged

    @staticmethod
    def merge(parts: list["EvalSums"]) -> "EvalSums":
        """The sums of disjoint user subsets added up (in the given order)."""
        out = EvalSums(parts[0].split, {}, 0, {}, {})
        for p in parts:
            for name, v in p.sums.items():
                out.sums[name] = out.sums.get(name, 0.0) + v
            out.n_users += p.n_users
            for g, d in p.gsums.items():
                tgt = out.gsums.setdefault(g, {})
                for name, v in d.items():
                    tgt[name] = tgt.get(name, 0.0) + v
            for g, c in p.gcount.items():
                out.gcount[g] = out.gcount.get(g, 0) + c
        return out

    def result(self) -> "EvalResult":
        n = max(self.n_users, 1)
        metrics = {name: s / n for name, s in self.sums.items()}
        groups = {g: {name: s / self.gcount[g] for name, s in d.items()} for g, d in self.gsums.items() if self.gcount.get(g)}
        return EvalResult(self.split, metrics, self.n_users, groups, dict(self.gcount), self.users, dict(self.per_user))


def _csr(pairs: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Pair counts (a pair listed twice counts twice, as before the shared helper)."""
    return pair_matrix(pairs, n_users, n_items, binary=False)


class Evaluator:
    """Evaluates a :class:`Scorer` on the valid or test split of a dataset.

    Args:
        dataset: the dataset (its train items are masked).
        topk: cut-offs, e.g. ``[10, 20, 50]``.
        batch_size: users per score block.
        item_chunk: items per score block (0 = all N at once); top-K lists of the chunks are merged.
        mask_valid_in_test: also exclude validation items when evaluating test.
        groups: ``{name: (N,) bool}`` item groups for the breakdown (default: the dataset's).
    """

    def __init__(
        self,
        dataset: RecDataset,
        topk: list[int] | tuple[int, ...] = (10, 20, 50),
        batch_size: int = 2048,
        mask_valid_in_test: bool = True,
        groups: dict[str, np.ndarray] | None = None,
        metrics: tuple[str, ...] = METRICS,
        item_chunk: int = 0,
    ) -> None:
        self.n_users, self.n_items = dataset.n_users, dataset.n_items
        self.topk = sorted(int(k) for k in topk)
        self.batch_size = int(batch_size)
        self.item_chunk = int(item_chunk)
        self.metrics = metrics
        self.train = _csr(dataset.train, self.n_users, self.n_items)
        self.splits = {"valid": dataset.valid, "test": dataset.test}
        self.mask = {
            "valid": self.train,
            "test": (self.train + _csr(dataset.valid, self.n_users, self.n_items)).tocsr() if mask_valid_in_test else self.train,
        }
        self.groups = dataset.item_groups() if groups is None else groups

    def users(self, split: str) -> np.ndarray:
        """The evaluated users of ``split`` (sorted)."""
        return np.unique(self.splits[split][:, 0])

    def evaluate(self, scorer: Scorer, split: str = "valid", users: np.ndarray | None = None,
                 per_user: tuple[str, ...] = ()) -> EvalResult:
        """Mean metrics over the split's users (or over ``users``, a subset of them); with ``per_user``
        names, the same ranking pass also gives each user's values (``result.users``, ``result.per_user``)."""
        return self.evaluate_sums(scorer, split, users, per_user).result()

    def _topk(self, scorer: Scorer, ub: np.ndarray, sub: sp.csr_matrix, kmax: int, device) -> torch.Tensor:
        """``(B, kmax)`` top item ids of users ``ub`` with the items of ``sub`` (CSR rows) excluded."""
        return top_k(scorer, ub, sub, kmax, self.n_items, self.item_chunk)[1]

    def per_user(self, scorer: Scorer, split: str = "test", names: tuple[str, ...] = ("recall@20", "ndcg@20")) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Each user's metric values: ``(users (U,) int64, {name: (U,) float64})``, users sorted.

        The means of the returned arrays are :meth:`evaluate`'s metrics (no item groups);
        paired significance tests over users use them (:mod:`graphrec.bench.significance`).
        """
        s = self.evaluate_sums(scorer, split, per_user=tuple(names))
        return s.users, s.per_user

    def evaluate_sums(self, scorer: Scorer, split: str = "valid", users: np.ndarray | None = None,
                      per_user: tuple[str, ...] = ()) -> EvalSums:
        """Metric sums and user counts over ``users`` (default: all of the split's users); with
        ``per_user`` names also each user's values of those metrics (``EvalSums.users``/``per_user``)."""
        pairs = self.splits[split]
        mask = self.mask[split]
        pos = _csr(pairs, self.n_users, self.n_items)
        users = self.users(split) if users is None else np.asarray(users, dtype=np.int64)
        kmax = min(self.topk[-1], self.n_items)
        keys = np.unique(pairs[:, 0] * self.n_items + pairs[:, 1])
        group_ids = list(self.groups)
        group_mat = (
            torch.from_numpy(np.stack([self.groups[g] for g in group_ids], axis=1)) if group_ids else None
        )  # (N, G) bool
        sums: dict[str, float] = {}
        gsums: dict[str, dict[str, float]] = {g: {} for g in group_ids}
        gcount = {g: 0 for g in group_ids}
        device = scorer.item.device
        kept: dict[str, list[np.ndarray]] = {n: [] for n in per_user}
        for start in range(0, len(users), self.batch_size):
            ub = users[start : start + self.batch_size]
            top = self._topk(scorer, ub, mask[ub], kmax, device)
            k = ub[:, None] * self.n_items + top.numpy()
            idx = np.minimum(np.searchsorted(keys, k), len(keys) - 1)
            hits = torch.from_numpy(keys[idx] == k)
            n_pos = torch.from_numpy(np.diff(pos[ub].indptr))
            for name, vals in per_user_metrics(hits, n_pos, self.topk, self.metrics).items():
                sums[name] = sums.get(name, 0.0) + float(vals.double().sum())  # float64: results agree across eval batch sizes
                if name in kept:
                    kept[name].append(vals.double().numpy())
            if group_mat is not None:
                in_group = group_mat[top]  # (B, K, G)
                pos_sub = pos[ub]
                pos_rows = np.repeat(np.arange(len(ub)), np.diff(pos_sub.indptr))
                gpos = np.zeros((len(ub), len(group_ids)), dtype=np.int64)
                np.add.at(gpos, pos_rows, group_mat.numpy()[pos_sub.indices].astype(np.int64))
                for gi, g in enumerate(group_ids):
                    sel = gpos[:, gi] > 0
                    if not sel.any():
                        continue
                    gh = (hits & in_group[:, :, gi])[torch.from_numpy(sel)]
                    vals = per_user_metrics(gh, torch.from_numpy(gpos[sel, gi]), self.topk, self.metrics)
                    for name, v in vals.items():
                        gsums[g][name] = gsums[g].get(name, 0.0) + float(v.double().sum())
                    gcount[g] += int(sel.sum())
        if not per_user:
            return EvalSums(split, sums, len(users), gsums, gcount)
        unknown = [n for n in per_user if n not in sums and len(users)]
        if unknown:
            raise ValueError(f"per_user: unknown metric(s) {', '.join(unknown)}")
        values = {n: np.concatenate(v) if v else np.zeros(0) for n, v in kept.items()}
        return EvalSums(split, sums, len(users), gsums, gcount, users.astype(np.int64), values)


def popularity_scorer(dataset: RecDataset) -> Scorer:
    """The trivial baseline: every user gets items ranked by their number of train interactions."""
    counts = np.bincount(dataset.train[:, 1], minlength=dataset.n_items).astype(np.float32)
    return Scorer(torch.ones(dataset.n_users, 1), torch.from_numpy(counts).unsqueeze(1))
