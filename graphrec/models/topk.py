"""Top-k ranking of all items for a batch of users, with excluded items (spec 2.4).

One function serves :meth:`graphrec.models.base.RecModel.recommend` and the evaluator
(:class:`graphrec.eval.evaluator.Evaluator`; it lives in the models layer, which the
evaluator may import): score the users against every item (or
``item_chunk`` items at a time, merging the chunks' top-k lists), set the excluded items to
``-inf`` and keep the ``k`` best. Memory is ``O(B x N)`` or ``O(B x item_chunk)``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from graphrec.models.base import Scorer


def top_k(
    scorer: Scorer,
    users: np.ndarray,
    exclude: sp.csr_matrix | None,
    k: int,
    n_items: int | None = None,
    item_chunk: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, k')`` best scores and item ids of ``users``, best first, ``k' = min(k, N)``.

    Args:
        scorer: scores users against items ``0..N-1``.
        users: ``(B,)`` int64 user ids.
        exclude: ``(B, N')`` CSR whose row ``b`` lists the items excluded for ``users[b]``
            (``N' <= N``: items past ``N'`` are never excluded), or ``None``.
        k: list length.
        n_items: N (default: the scorer's item count).
        item_chunk: items per score block (0 = all at once).

    Excluded items score ``-inf``; they appear only when a user has fewer than ``k`` others.
    Exactly tied scores may come in either order.
    """
    n_items = int(scorer.item.shape[0]) if n_items is None else int(n_items)
    device = scorer.item.device
    step = item_chunk if 0 < item_chunk < n_items else n_items
    u = torch.as_tensor(np.asarray(users, dtype=np.int64)).to(device)
    best_v = best_i = None
    for lo in range(0, n_items, step):
        hi = min(lo + step, n_items)
        scores = (scorer.score(u) if step == n_items else scorer.score_items(u, lo, hi)).float()
        if exclude is not None and exclude.nnz and lo < exclude.shape[1]:
            blk = exclude if (lo == 0 and hi >= exclude.shape[1]) else exclude[:, lo : min(hi, exclude.shape[1])]
            rows = np.repeat(np.arange(blk.shape[0]), np.diff(blk.indptr))
            cols = torch.from_numpy(blk.indices.astype(np.int64)).to(device)
            scores[torch.from_numpy(rows).to(device), cols] = -np.inf
        v, i = scores.topk(min(k, hi - lo), dim=1)
        i = i + lo
        if best_v is not None:  # merge with the best of the earlier chunks
            v, j = torch.cat([best_v, v], dim=1).topk(min(k, best_v.shape[1] + v.shape[1]), dim=1)
            i = torch.cat([best_i, i], dim=1).gather(1, j)
        best_v, best_i = v, i
    return best_v.cpu(), best_i.cpu()
