"""A score offset for items without training interactions, chosen on the validation split.

Content-based representations of new (cold) items are not calibrated against the old items'
scores: too high and they crowd old items out of every list, too low and they never appear.
In one shared ranking every new item in a top-20 list takes the place of an old one, so the
offset is a budget: :func:`choose_offset` adds ``β = -t σ`` to the cold items' scores (``σ`` =
standard deviation of the old items' scores over a sample of users; ``t`` in
:data:`OFFSET_GRID`, negative = a boost) and keeps the **smallest** ``t`` (the most exposure of
new items) whose old-item validation Recall@20 is at least ``(1 - tolerance)`` times the
reference scorer's (e.g. the model without its cold-item rows). It does not need new items
among the validation positives (the new-item setting has few there). Used by ``dgmrec_cold``
and by ``benchmarks/bench_new_items.py`` for the kNN baseline.
"""

from __future__ import annotations

from typing import Any

import torch

from graphrec.models.base import Scorer

#: multiples t of σ tried by :func:`choose_offset`, ascending: -4, ..., -0.25, 0, 0.25, ..., 256
OFFSET_GRID = tuple(sorted({0.0} | {s * 2.0 ** (j / 2) for j in range(-4, 5) for s in (-1.0, 1.0)}
                           | {2.0 ** (j / 2) for j in range(5, 17)}))


def with_offset(zu: torch.Tensor, zi: torch.Tensor, cold: torch.Tensor, c: torch.Tensor, offset: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``([z_u; 1], [z_i; 0])`` with the ``cold`` rows (``(N,)`` bool) replaced by ``[c; β]``.

    Shapes: ``(U, d)``, ``(N, d)``, ``(|cold|, d)`` -> ``(U, d+1)``, ``(N, d+1)``; scores of
    cold items are ``<z_u, c_i> + β``, the others unchanged.
    """
    zi = torch.cat([zi, torch.zeros_like(zi[:, :1])], dim=1)
    rows = torch.nonzero(cold).squeeze(1)
    zi[rows] = torch.cat([c, torch.full_like(c[:, :1], float(offset))], dim=1)
    return torch.cat([zu, torch.ones_like(zu[:, :1])], dim=1), zi


@torch.no_grad()
def choose_offset(
    evaluator,
    zu: torch.Tensor,
    zi: torch.Tensor,
    cold: torch.Tensor,
    c: torch.Tensor,
    reference: Scorer,
    tolerance: float = 0.02,
    metric: str = "recall@20",
) -> dict[str, Any]:
    """The offset β of cold items' scores (see the module docstring), from the ``valid`` split.

    Returns ``{"offset", "t", "sigma", "reference", "table": [(t, valid metric, old Recall@20), ...]}``
    (``metric`` is reported, not optimised); the largest ``t`` when no offset keeps the old items
    within ``tolerance``.
    """
    old = torch.nonzero(~cold).squeeze(1)
    g = torch.Generator().manual_seed(0)
    su = torch.randint(0, zu.shape[0], (min(256, zu.shape[0]),), generator=g).to(zu.device)
    sigma = float((zu[su] @ zi[old].T).std()) if len(old) > 1 else 1.0

    def old_recall(res) -> float:
        return float(res.groups["old"]["recall@20"]) if "old" in res.groups else float(res.metrics["recall@20"])

    ref = old_recall(evaluator.evaluate(reference, "valid"))
    table, t = [], OFFSET_GRID[-1]
    for t_try in OFFSET_GRID:  # ascending: the first that keeps the old items within budget
        res = evaluator.evaluate(Scorer(*with_offset(zu, zi, cold, c, -t_try * sigma)), "valid")
        table.append((t_try, float(res.metrics[metric]), old_recall(res)))
        if table[-1][2] >= (1.0 - tolerance) * ref:
            t = t_try
            break
    return {"offset": -t * sigma, "t": t, "sigma": sigma, "reference": ref, "table": table}
