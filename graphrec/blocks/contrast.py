"""The two-view user/item contrast of SGL and SimGCL (InfoNCE over a batch's distinct nodes)."""

from __future__ import annotations

import torch

from graphrec.blocks.infonce import infonce


def contrast_views(u1: torch.Tensor, i1: torch.Tensor, u2: torch.Tensor, i2: torch.Tensor, batch, temp: float) -> torch.Tensor:
    """InfoNCE between two views of the batch's distinct users plus that of its distinct positive items
    (SGL eq. 9-10, SimGCL eq. 3). ``batch`` is a :class:`~graphrec.data.sampler.BPRBatch`.
    Shapes: ``(U, d), (N, d)`` per view -> scalar."""
    users, items = torch.unique(batch.users), torch.unique(batch.pos)
    return infonce(u1[users], u2[users], temp) + infonce(i1[items], i2[items], temp)
