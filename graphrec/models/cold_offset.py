"""Scores of items without training interactions on the old items' scale, and their shift.

Content representations ``c_i`` of new (cold) items are not calibrated against the old items'
scores: too high and they crowd old items out of every list, too low and they never appear.
:func:`user_affine` maps each user's content scores onto that user's old-item score
distribution (``a_u <z_u, c_i> + b_u``, matching mean and standard deviation), and a shift of
``t`` standard deviations ``s_u`` moves them down (``t > 0``) or up. In one shared ranking
every new item in a top-20 list takes the place of an old one, so ``t`` is a budget:
:func:`choose_shift` bisects for the **smallest** ``t`` (the most exposure of new items) whose
old-item validation Recall@20 is at least ``(1 - tolerance)`` times plain scoring's. Used by
``dgmrec_cold`` and ``benchmarks/bench_new_items.py``.
"""

from __future__ import annotations

from typing import Any

import torch

from graphrec.models.base import Scorer

#: old items sampled (evenly spaced ids) for the per-user score statistics
SAMPLE = 2000


@torch.no_grad()
def user_affine(
    zu: torch.Tensor, zi: torch.Tensor, old: torch.Tensor, ref: torch.Tensor, standardize: bool = True, chunk: int = 4096
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-user ``(a, b, s)``, each ``(U,)``: content scores ``<z_u, c>`` map to ``a_u <z_u, c> + b_u``.

    ``zu (U, d)``, ``zi (N, d)``, ``old (N,)`` bool, ``ref (R, d)`` content rows whose scores define
    the content score distribution. ``standardize``: ``a_u = σ_u^old / σ_u^ref``,
    ``b_u = μ_u^old − a_u μ_u^ref``, ``s_u = σ_u^old`` (statistics of ``<z_u, z_j>`` over up to
    :data:`SAMPLE` old items ``j`` and of ``<z_u, r>`` over ``ref``); otherwise ``a = 1, b = 0`` and
    ``s`` = the standard deviation of old-item scores over all users.
    """
    idx = torch.nonzero(old).squeeze(1)
    if len(idx) > SAMPLE:
        idx = idx[torch.linspace(0, len(idx) - 1, SAMPLE).long().to(idx.device)]
    zo = zi[idx]
    U = zu.shape[0]
    mu_o, sd_o, mu_r, sd_r = (torch.empty(U, device=zu.device) for _ in range(4))
    for lo in range(0, U, chunk):
        so = zu[lo:lo + chunk] @ zo.T
        sr = zu[lo:lo + chunk] @ ref.T
        mu_o[lo:lo + chunk], sd_o[lo:lo + chunk] = so.mean(1), so.std(1) if so.shape[1] > 1 else torch.ones(so.shape[0])
        mu_r[lo:lo + chunk], sd_r[lo:lo + chunk] = sr.mean(1), sr.std(1) if sr.shape[1] > 1 else torch.ones(sr.shape[0])
    if standardize:
        a = sd_o / sd_r.clamp_min(1e-12)
        return a, mu_o - a * mu_r, sd_o
    g = torch.Generator().manual_seed(0)
    su = torch.randint(0, U, (min(256, U),), generator=g).to(zu.device)
    sigma = (zu[su] @ zo.T).std() if zo.shape[0] > 1 else torch.ones(())
    return torch.ones(U, device=zu.device), torch.zeros(U, device=zu.device), sigma.expand(U).clone()


def affine_rows(
    zu: torch.Tensor, zi: torch.Tensor, cold: torch.Tensor, c: torch.Tensor,
    a: torch.Tensor, b: torch.Tensor, s: torch.Tensor, t: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U, 2d+1)`` user rows ``[z_u; a_u z_u; b_u − t s_u]`` and ``(N, 2d+1)`` item rows ``[z_i; 0; 0]``
    with the ``cold`` rows (``(N,)`` bool) ``[0; c_i; 1]``: old items score ``<z_u, z_i>``, cold items
    ``a_u <z_u, c_i> + b_u − t s_u``."""
    user = torch.cat([zu, a.unsqueeze(1) * zu, (b - float(t) * s).unsqueeze(1)], dim=1)
    item = torch.cat([zi, torch.zeros_like(zi), torch.zeros_like(zi[:, :1])], dim=1)
    rows = torch.nonzero(cold).squeeze(1)
    item[rows] = torch.cat([torch.zeros_like(c), c, torch.ones_like(c[:, :1])], dim=1)
    return user, item


@torch.no_grad()
def choose_shift(
    evaluator, zu: torch.Tensor, zi: torch.Tensor, cold: torch.Tensor, c: torch.Tensor,
    a: torch.Tensor, b: torch.Tensor, s: torch.Tensor, tolerance: float = 0.02,
    lo: float = -4.0, hi: float = 8.0, steps: int = 7,
) -> dict[str, Any]:
    """The shift ``t`` of cold items' scores (module docstring), from the ``valid`` split.

    ``evaluator`` must have an item group ``old``. Old-item Recall@20 does not fall as ``t`` grows,
    so ``t`` is bisected in ``[lo, hi]`` (``steps`` halvings, at most ``steps + 3`` evaluations).
    Returns ``{"t", "reference", "table": [(t, old Recall@20), ...]}``; ``hi`` when no shift keeps
    the old items within ``tolerance``.
    """
    def old_recall(scorer: Scorer) -> float:
        return float(evaluator.evaluate(scorer, "valid").groups["old"]["recall@20"])

    ref = old_recall(Scorer(zu, zi))
    need = (1.0 - tolerance) * ref
    table: list[tuple[float, float]] = []

    def ok(t: float) -> bool:
        table.append((t, old_recall(Scorer(*affine_rows(zu, zi, cold, c, a, b, s, t)))))
        return table[-1][1] >= need

    return {"t": smallest_passing(ok, lo, hi, steps), "reference": ref, "table": table}


def smallest_passing(ok, lo: float, hi: float, steps: int) -> float:
    """Bisect for the smallest ``t`` in ``[lo, hi]`` with ``ok(t)``, for a test that passes from some
    ``t`` on (a budget that larger shifts only loosen): ``lo`` if it passes, ``hi`` if even ``hi``
    fails, else the upper end of the bracket after ``steps`` halvings (at most ``steps + 2`` calls)."""
    if ok(lo):
        return lo
    if not ok(hi):
        return hi
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi
