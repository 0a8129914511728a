"""The base class of every recommender model and the scorer used by the evaluator."""

from __future__ import annotations

from typing import Any, ClassVar, TYPE_CHECKING

import dgl
import torch
from torch import nn

from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.graph.heterograph import build_heterograph

if TYPE_CHECKING:  # pragma: no cover
    from graphrec.train.trainer import Trainer


class Scorer:
    """Scores users against all items from fixed user/item representations.

    Args:
        user: ``(U, d)``; item: ``(N, d)``. ``score(users)`` returns ``(B, N)`` dot products.
    """

    def __init__(self, user: torch.Tensor, item: torch.Tensor) -> None:
        self.user = user
        self.item = item

    def score(self, users: torch.Tensor) -> torch.Tensor:
        return self.user[users] @ self.item.T


class RecModel(nn.Module):
    """A recommender assembled from blocks.

    Subclasses set ``default_config`` (their keys and defaults; the trainer keys of
    :data:`graphrec.config.TRAIN_DEFAULTS` may be overridden there too) and implement
    :meth:`loss` and :meth:`representations`. Per-epoch work goes in the hooks
    :meth:`on_epoch_start` and :meth:`before_evaluation`.

    Attributes:
        graph: the dataset heterograph (see :mod:`graphrec.graph.heterograph`).
    """

    name: ClassVar[str] = ""
    default_config: ClassVar[dict[str, Any]] = {}

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        self.n_users = dataset.n_users
        self.n_items = dataset.n_items
        self.embedding_size = int(config.get("embedding_size", 64))
        self.graph: dgl.DGLGraph = self.build_graph(dataset)

    # ----- graph -----
    def build_graph(self, dataset: RecDataset) -> dgl.DGLGraph:
        """The heterograph this model runs on (default: user-item relations only)."""
        return build_heterograph(dataset.n_users, dataset.n_items, dataset.train)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def to_device(self, device: torch.device | str) -> "RecModel":
        self.to(device)
        self.graph = self.graph.to(device)
        return self

    # ----- training -----
    def optim_parameters(self):
        """Parameters the trainer's Adam optimises (default: all; DGMRec excludes its CLUB estimators)."""
        return self.parameters()

    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        """Losses of one batch; ``'loss'`` is the total that is back-propagated."""
        raise NotImplementedError

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final ``(U, d')`` user and ``(N, d')`` item representations used for scoring."""
        raise NotImplementedError

    @torch.no_grad()
    def scorer(self) -> Scorer:
        """A :class:`Scorer` for evaluation (representations computed once, spec section 3)."""
        user, item = self.representations()
        return Scorer(user, item)

    # ----- hooks -----
    def on_train_start(self, trainer: "Trainer") -> None:
        """Called once after the optimiser is built (create extra optimisers here)."""

    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None:
        """Called before every epoch's first batch (DGMRec: CLUB steps, generation, refinement)."""

    def before_evaluation(self, trainer: "Trainer", split: str) -> None:
        """Called before an evaluation of ``split`` during training."""
