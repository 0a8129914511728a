"""Optimisers for models with row-sparse embedding tables (``sparse_embeddings``, docs/scaling.md).

With ``propagation: sampled`` a batch reads a few rows of the ID embedding tables (and DGMRec's
raw feature tables); looked up with ``sparse=True`` (:func:`graphrec.graph.sampling.lookup`) their
gradients are sparse tensors of those rows. :class:`torch.optim.SparseAdam` (lazy Adam) then updates
only those rows and their moments, so a step costs ``O(rows x d)`` instead of ``O(table x d)``. A
model with other, dense parameters (DGMRec's encoders, gate, generators, decoders) needs both:
:class:`MixedAdam` steps the row-sparse tables with SparseAdam and every other parameter with
:class:`torch.optim.Adam`.

On a table's first step SparseAdam and Adam agree on the rows the batch touched: both moments
start at zero, so both set ``m = (1 - b1) g``, ``v = (1 - b2) g^2`` and move an entry by about
``-lr * g / |g|``. They differ only in where ``eps`` enters: Adam divides by
``sqrt(v / (1 - b2^t)) + eps``, SparseAdam by ``(sqrt(v) + eps) / sqrt(1 - b2^t)``, i.e. Adam with
``eps / sqrt(1 - b2^t)`` (3.2e-7 instead of 1e-8 at the first step): a relative difference of about
``3e-7 / |g|``, which is not negligible for the tiny gradients of many ID-table entries (up to 14 %
of an update: DGMRec on the small synthetic set, lr 1e-2). Rows the batch did not touch do not move
(Adam moves them too once their moments are non-zero: lazy Adam keeps an untouched row's moments
instead of decaying them). ``tests/test_dgmrec_sampled.py`` checks the first step against Adam with
that ``eps``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class MixedAdam(torch.optim.Optimizer):
    """SparseAdam for ``sparse`` parameters (row-sparse gradients), Adam for ``dense`` ones.

    Args:
        sparse: parameters whose gradients are sparse tensors (at least one).
        dense: every other parameter (at least one); ``weight_decay`` applies to these only
            (SparseAdam has none: the caller rejects ``weight_decay > 0`` where it matters).
        lr: learning rate of both (an LR scheduler changes both: the param groups are shared).

    ``param_groups`` are ``[sparse group, dense group]``, the very dicts of the two inner optimisers,
    and ``state`` is one dict for both, so :meth:`state_dict` / :meth:`load_state_dict` (checkpoints,
    ``fit --resume``), ``zero_grad`` and LR schedulers work as on any optimiser.
    """

    def __init__(self, sparse: Iterable[torch.Tensor], dense: Iterable[torch.Tensor], lr: float, weight_decay: float = 0.0) -> None:
        sparse, dense = list(sparse), list(dense)
        if not sparse or not dense:
            raise ValueError("MixedAdam needs sparse and dense parameters (use SparseAdam or Adam for one kind)")
        self._sparse = torch.optim.SparseAdam(sparse, lr=lr)
        self._dense = torch.optim.Adam(dense, lr=lr, weight_decay=weight_decay)
        super().__init__(self._sparse.param_groups + self._dense.param_groups, {})
        self._link()

    def _link(self) -> None:
        """Share this optimiser's groups (same dicts) and state with the inner ones."""
        self._sparse.param_groups, self._dense.param_groups = [self.param_groups[0]], [self.param_groups[1]]
        self._sparse.state = self._dense.state = self.state

    @property
    def sparse_params(self) -> list[torch.Tensor]:
        """The parameters stepped by SparseAdam (their gradients must be sparse)."""
        return list(self.param_groups[0]["params"])

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._sparse.step()
        self._dense.step()
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)  # replaces self.state and the group dicts
        self._link()


def sparse_parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The parameters of ``optimizer`` whose gradients are row-sparse: all of a SparseAdam's, MixedAdam's
    sparse group, none otherwise (data-parallel ranks all-gather those rows: graphrec.train.distributed)."""
    if isinstance(optimizer, torch.optim.SparseAdam):
        return [p for group in optimizer.param_groups for p in group["params"]]
    if isinstance(optimizer, MixedAdam):
        return optimizer.sparse_params
    return []
