"""The base class of every recommender model and the scorer used by the evaluator."""

from __future__ import annotations

from typing import Any, ClassVar, TYPE_CHECKING

import dgl
import torch
from torch import nn

from graphrec.blocks.slots import build_block
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

    def score_items(self, users: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """``(B, hi - lo)`` scores against items ``lo..hi-1`` (evaluation with ``eval_item_chunk``)."""
        return self.user[users] @ self.item[lo:hi].T


class RecModel(nn.Module):
    """A recommender assembled from blocks.

    Subclasses set ``default_config`` (their keys and defaults; the trainer keys of
    :data:`graphrec.config.TRAIN_DEFAULTS` may be overridden there too) and implement
    :meth:`loss` and :meth:`representations`. Per-epoch work goes in the hooks
    :meth:`on_epoch_start` and :meth:`before_evaluation`.

    Swappable blocks: ``block_slots = {config_key: slot}`` (slots in
    :mod:`graphrec.blocks.slots`); the config key holds a registered block name (its default
    goes in ``default_config``) and :meth:`make_block` builds and checks it. Checkpoints
    record these names and the plugin modules that registered them.

    Attributes:
        graph: the dataset heterograph (see :mod:`graphrec.graph.heterograph`), always on the CPU.
    """

    name: ClassVar[str] = ""
    default_config: ClassVar[dict[str, Any]] = {}
    block_slots: ClassVar[dict[str, str]] = {}
    #: how data-parallel training splits a batch's loss (graphrec.train.distributed, docs/scaling.md):
    #: "rows" when loss(batch) is a mean over the batch's rows plus batch-independent terms (each rank
    #: takes a slice of the batch), "replicate" otherwise (each rank computes the whole batch's loss).
    distributed_loss: ClassVar[str] = "replicate"

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        self.n_users = dataset.n_users
        self.n_items = dataset.n_items
        self.embedding_size = int(config.get("embedding_size", 64))
        self.dataset_modalities = list(dataset.modalities)
        self.graph: dgl.DGLGraph = self.build_graph(dataset)

    # ----- blocks -----
    def make_block(self, key: str) -> nn.Module:
        """Build the block named by ``config[key]`` for slot ``block_slots[key]``.

        Checks the name, the forward signature and the declared relations against
        :attr:`graph` (``{m}`` expanded to the model's modalities), then constructs it with
        ``d`` = embedding size and/or ``modalities`` if its ``__init__`` asks for them.
        """
        mods = getattr(self, "modalities", None)
        mods = list(mods) if mods is not None else self.dataset_modalities
        return build_block(
            key, self.config.get(key), self.block_slots[key], self.graph, mods, self.embedding_size, self.name or type(self).__name__
        )

    # ----- graph -----
    def build_graph(self, dataset: RecDataset) -> dgl.DGLGraph:
        """The heterograph this model runs on (default: user-item relations only)."""
        return build_heterograph(dataset.n_users, dataset.n_items, dataset.train)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def to_device(self, device: torch.device | str) -> "RecModel":
        """Move parameters and buffers to ``device``; the heterograph stays on the CPU.

        Message passing runs on the features' device with tensors derived from the graph
        (:mod:`graphrec.graph.spmm`), so a CPU-only DGL build can train on a GPU.
        """
        self.to(device)
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
