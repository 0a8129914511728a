"""The new-items setting (spec 1.5).

20 % of items become *new*: they have no training interaction; their original training
rows become test positives, validation stays unchanged. Items are drawn evenly from a
*cold* group (the 70 % least-interacted items) and a *warm* group (the rest), seed 1111,
as in the authors' ``preprocess_new_items.py``.
"""

from __future__ import annotations

import numpy as np

from graphrec.data.interactions import TEST, TRAIN, Interactions
from graphrec.errors import GraphrecError


def select_new_items(
    train_counts: np.ndarray, fraction: float = 0.2, cold_fraction: float = 0.7, seed: int = 1111
) -> np.ndarray:
    """Return the sorted ids of new items.

    Args:
        train_counts: ``(N,)`` number of train interactions per item.
        fraction: share of each of the cold and warm groups that becomes new.
        cold_fraction: share of items (fewest train interactions first) in the cold group.

    The sort by count is stable (ties in id order), unlike the authors' pandas sort, so the
    shipped ``*_del.inter`` files cannot be regenerated bit-exactly; read them instead.
    """
    if not 0.0 < fraction < 1.0:
        raise GraphrecError(f"new-item fraction must be in (0, 1), got {fraction}")
    order = np.argsort(np.asarray(train_counts), kind="stable")
    n_cold = int(np.floor(cold_fraction * len(order)))
    cold, warm = order[:n_cold], order[n_cold:]
    rs = np.random.RandomState(seed)
    new_cold = rs.choice(cold, int(np.floor(fraction * len(cold))), replace=False) if len(cold) else cold
    new_warm = rs.choice(warm, int(np.floor(fraction * len(warm))), replace=False) if len(warm) else warm
    return np.sort(np.concatenate([new_cold, new_warm]).astype(np.int64))


def apply_new_items(inter: Interactions, new_items: np.ndarray) -> Interactions:
    """Move the training rows of ``new_items`` to the test split (spec 1.5); valid is unchanged."""
    is_new = np.zeros(inter.n_items, dtype=bool)
    is_new[new_items] = True
    labels = inter.labels.copy()
    labels[(labels == TRAIN) & is_new[inter.items]] = TEST
    return Interactions(inter.users, inter.items, labels, inter.n_users, inter.n_items)


def derive_new_items(full: Interactions, reduced: Interactions) -> np.ndarray:
    """Fallback of spec 1.5: items with train rows in the full file but none in the ``_del`` file."""
    n = max(full.n_items, reduced.n_items)
    had = np.zeros(n, dtype=bool)
    had[full.items[full.labels == TRAIN]] = True
    has = np.zeros(n, dtype=bool)
    has[reduced.items[reduced.labels == TRAIN]] = True
    return np.flatnonzero(had & ~has).astype(np.int64)
