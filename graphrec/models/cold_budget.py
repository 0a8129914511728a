"""The expected old-item cost of a shift of cold items' scores, from score margins (smooth budget).

:func:`graphrec.models.cold_offset.choose_shift` measures the old-item cost of a shift ``t`` as the
drop of old-item validation Recall@20. That estimate rests on the few validation positives that
happen to sit near rank 20, so the shift it picks lands at a different cost on the test split
(synthetic new-item protocol: −0.9 % to −3.5 % for a 2 % budget, docs/results.md). This module
estimates the same cost from everything that does not depend on which user holds those positives:

* **How many old items each user loses.** With cold scores shifted by ``t s_u``, user ``u``'s top
  K holds ``n_u(t) = #{n : m_un > t}`` cold items, where the margins
  ``m_un = (c_u(n) − o_u(K+1−n)) / s_u`` compare u's ``n``-th best cold score with its
  ``(K+1−n)``-th best old score (``n = 1..K``). Computed for **every** user with a training
  interaction (the test users are not the validation users), without evaluations.
* **What an old item at rank r is worth.** ``h(r)``: the mean over validation users with an old
  positive of ``1[u's r-th old item is a validation positive] / |P_u|`` (so ``Σ_{r≤K} h(r)`` is
  plain scoring's old-item validation Recall@K), made non-increasing in ``r`` by isotonic
  regression over ranks ``1..3K`` (pooling the noisy ranks near K with their neighbours).
  ``g(r)``: the same of the squared terms (their second moment).

Expected relative cost, and its standard deviation on a split of ``|V|`` users::

    cost(t) = mean_u Σ_{r=K+1−n_u(t)}^{K} h(r) / R,     sd(t) = sqrt(mean_u Σ_{r=K+1−n_u(t)}^{K} g(r) / |V|) / R

(``R`` = plain old-item validation Recall@K). :func:`choose_shift_expected` bisects for the
smallest ``t`` with ``cost(t) + z · sd(t) <= tolerance``: ``z = 0`` aims the expected cost at the
budget, ``z > 0`` keeps a margin of ``z`` standard deviations against the noise of the split the
model is tested on. Both are non-increasing in ``t``. Used by ``dgmrec_cold``
(``cold_budget: expected``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from graphrec.data.interactions import pair_matrix
from graphrec.models.cold_offset import smallest_passing


def isotonic_decreasing(y: np.ndarray) -> np.ndarray:
    """``(R,)`` least-squares non-increasing fit of ``y (R,)`` (pool adjacent violators, equal weights).

    The fit preserves the sum of ``y`` and is ``y`` itself when ``y`` is already non-increasing.
    """
    y = np.asarray(y, dtype=np.float64)
    sums: list[float] = []
    counts: list[int] = []
    for v in y:
        sums.append(float(v))
        counts.append(1)
        while len(sums) > 1 and sums[-2] / counts[-2] < sums[-1] / counts[-1]:
            s, c = sums.pop(), counts.pop()
            sums[-1] += s
            counts[-1] += c
    return np.concatenate([np.full(c, s / c) for s, c in zip(sums, counts)]) if sums else y.copy()


@dataclass
class OldCost:
    """Margins and rank values of :func:`old_cost` (module docstring).

    ``margins (W, K)``: ``m_un`` of the ``W`` users it averages over; ``h (K,)``, ``g (K,)``: the
    smoothed value and second moment of an old item at ranks ``1..K``; ``reference``: plain old-item
    Recall@K on the split; ``n_eval``: the number of users with an old positive in it.
    """

    margins: np.ndarray
    h: np.ndarray
    g: np.ndarray
    reference: float
    n_eval: int

    def _tails(self, t: float) -> tuple[float, float]:
        k = len(self.h)
        n = (self.margins > t).sum(axis=1)
        tail_h = np.concatenate([[0.0], np.cumsum(self.h[::-1])])  # tail_h[n] = Σ of h over ranks K+1−n..K
        tail_g = np.concatenate([[0.0], np.cumsum(self.g[::-1])])
        n = np.minimum(n, k)
        return float(tail_h[n].mean()), float(tail_g[n].mean())

    def expected(self, t: float) -> tuple[float, float]:
        """``(cost(t), sd(t))``: expected relative loss of old-item Recall@K and its standard deviation."""
        if self.reference <= 0 or len(self.margins) == 0:
            return 0.0, 0.0
        mh, mg = self._tails(t)
        return mh / self.reference, float(np.sqrt(mg / max(self.n_eval, 1))) / self.reference


def _pad_inf(x: torch.Tensor, k: int) -> torch.Tensor:
    """``(B, k)``: the ``(B, j ≤ k)`` scores ``x`` with ``-inf`` columns appended (fewer than ``k`` candidates)."""
    if x.shape[1] >= k:
        return x
    return torch.cat([x, torch.full((x.shape[0], k - x.shape[1]), float("-inf"), dtype=x.dtype, device=x.device)], dim=1)


@torch.no_grad()
def old_cost(
    user: torch.Tensor, item: torch.Tensor, cold: torch.Tensor, s: torch.Tensor, dataset, old: np.ndarray,
    split: str = "valid", k: int = 20, batch_size: int = 2048,
) -> OldCost:
    """The :class:`OldCost` of scores ``user @ item.T`` at shift 0 (module docstring).

    ``user (U, D)``, ``item (N, D)`` (e.g. :func:`~graphrec.models.cold_offset.affine_rows` at ``t = 0``),
    ``cold (N,)`` bool: the items scored from content, ``s (U,)``: the shift's unit per user,
    ``old (N,)`` bool: the items whose Recall@K is protected; ``dataset``'s training items are excluded
    (and on ``split="test"`` its validation items too). Margins are over users with a training interaction.
    """
    n_users, n_items = dataset.n_users, dataset.n_items
    train = pair_matrix(dataset.train, n_users, n_items)
    exclude = (train + pair_matrix(dataset.valid, n_users, n_items)).tocsr() if split == "test" else train
    pairs = np.asarray(dataset.valid if split == "valid" else dataset.test, dtype=np.int64).reshape(-1, 2)
    cold_np = cold.cpu().numpy().astype(bool)
    crow = torch.from_numpy(np.flatnonzero(cold_np)).to(item.device)
    orow = torch.from_numpy(np.flatnonzero(~cold_np)).to(item.device)
    kh = min(3 * k, len(orow))  # ranks whose values are smoothed together
    old_pos = pair_matrix(pairs[np.asarray(old, dtype=bool)[pairs[:, 1]]], n_users, n_items)  # positives among old items
    n_old_pos = np.diff(old_pos.indptr)
    trained = np.flatnonzero(np.diff(train.indptr) > 0)
    op = old_pos.tocoo()
    keys = np.sort(op.row.astype(np.int64) * n_items + op.col)  # old positives as user * N + item
    per_batch = max(1, min(batch_size, (1 << 24) // max(n_items, 1)))
    margins, hsum, gsum = [], np.zeros(kh), np.zeros(kh)
    users = np.union1d(trained, np.flatnonzero(n_old_pos > 0))
    for lo in range(0, len(users), per_batch):
        ub = users[lo:lo + per_batch]
        sc = user[torch.from_numpy(ub).to(user.device)] @ item.T  # (B, N)
        ex = exclude[ub].tocoo()
        sc[torch.from_numpy(ex.row).long().to(sc.device), torch.from_numpy(ex.col).long().to(sc.device)] = float("-inf")
        so, io = torch.topk(sc[:, orow], kh, dim=1)
        sc_c = sc[:, crow]
        kc = min(k, sc_c.shape[1])
        cs = _pad_inf(torch.topk(sc_c, kc, dim=1).values if kc else sc_c[:, :0], k)
        oo = _pad_inf(so[:, :k], k)
        m = (cs - oo.flip(1)) / s[torch.from_numpy(ub).to(s.device)].clamp_min(1e-12).unsqueeze(1)  # m[:, n-1] vs old rank K+1−n
        m = torch.nan_to_num(m, nan=float("-inf"))
        keep = np.isin(ub, trained)
        margins.append(m.cpu().numpy()[keep])
        ev = n_old_pos[ub] > 0
        if ev.any():
            items = orow[io].cpu().numpy()[ev]  # (B', kh) item ids by old rank
            rows = ub[ev]
            q = rows[:, None] * n_items + items
            hit = keys[np.minimum(np.searchsorted(keys, q), max(len(keys) - 1, 0))] == q if len(keys) else np.zeros(q.shape, bool)
            y = hit / n_old_pos[rows][:, None]
            hsum += y.sum(0)
            gsum += (y ** 2).sum(0)
    n_eval = int((n_old_pos > 0).sum())
    h_raw = hsum / max(n_eval, 1)
    reference = float(h_raw[:k].sum())
    h = isotonic_decreasing(h_raw)[:k]
    g = isotonic_decreasing(gsum / max(n_eval, 1))[:k]
    if len(h) < k:
        h, g = np.pad(h, (0, k - len(h))), np.pad(g, (0, k - len(g)))
    return OldCost(np.concatenate(margins) if margins else np.zeros((0, k)), h, g, reference, n_eval)


def choose_shift_expected(cost: OldCost, tolerance: float = 0.02, z: float = 0.0,
                          lo: float = -4.0, hi: float = 8.0, steps: int = 24) -> dict[str, Any]:
    """The smallest ``t`` in ``[lo, hi]`` with ``cost(t) + z sd(t) <= tolerance`` (bisection, ``steps``
    halvings; ``hi`` when none). Returns ``{"t", "reference", "expected", "sd", "table": [(t, cost, sd), ...]}``."""
    table: list[tuple[float, float, float]] = []

    def ok(t: float) -> bool:
        c, sd = cost.expected(t)
        table.append((t, c, sd))
        return c + z * sd <= tolerance

    t = smallest_passing(ok, lo, hi, steps)
    c, sd = cost.expected(t)
    return {"t": t, "reference": cost.reference, "expected": c, "sd": sd, "table": table}
