"""The base class of every recommender model and the scorer used by the evaluator."""

from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Any, ClassVar, Iterator, TYPE_CHECKING

import dgl
import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from graphrec.blocks.slots import build_block
from graphrec.data.catalogue import NewItems
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.errors import GraphrecError
from graphrec.graph.heterograph import build_heterograph

if TYPE_CHECKING:  # pragma: no cover
    from graphrec.train.trainer import Trainer


_GRAPHS_FROM_STATE: contextvars.ContextVar[bool] = contextvars.ContextVar("graphs_from_state", default=False)


@contextlib.contextmanager
def graphs_from_state() -> Iterator[None]:
    """Models built inside this block get their graph state from ``load_state_dict`` right after (a
    checkpoint, a resume state), so a model whose graphs are costly to compute may skip computing them
    (:func:`graphs_deferred`; DGMRec's item kNN graphs: about 6 minutes at 10^6 items) and hold
    placeholders until its ``set_extra_state`` fills them. A model that did so and was never loaded
    says so (:meth:`RecModel.check_graphs_loaded`)."""
    token = _GRAPHS_FROM_STATE.set(True)
    try:
        yield
    finally:
        _GRAPHS_FROM_STATE.reset(token)


def graphs_deferred() -> bool:
    """True inside :func:`graphs_from_state`: ``build_graph`` may leave its costly graphs to the state loaded next."""
    return _GRAPHS_FROM_STATE.get()


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


def physical_memory() -> int | None:
    """Bytes of RAM of this machine (``None`` where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def check_table_memory(model: str, n_users: int, n_items: int, d: int) -> None:
    """One-line :class:`GraphrecError`, before any allocation, when the ``(U + N) x d`` float32 embedding
    tables with their gradients and Adam's two moments (4 copies) would not fit in this machine's RAM."""
    need = (n_users + n_items) * d * 4 * 4
    ram = physical_memory()
    if ram is not None and need > ram:
        raise GraphrecError(
            f"{model} with embedding_size={d:,} on {n_users:,} users and {n_items:,} items needs at least {need / 2**30:,.1f} GiB "
            f"for its embedding tables (weights, gradients, Adam state), more than this machine's {ram / 2**30:.1f} GiB; "
            "lower embedding_size, or check that the ids are 0..n-1"
        )


def check_keys(model: str, config: dict[str, Any], positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = (), unit: tuple[str, ...] = ()) -> None:
    """One-line :class:`GraphrecError` for a model key out of range (``> 0``, ``>= 0``, ``[0, 1)``)."""
    for key in positive:
        if not float(config[key]) > 0:
            raise GraphrecError(f"{model}: '{key}' must be > 0, got {config[key]!r}")
    for key in non_negative:
        if not float(config[key]) >= 0:
            raise GraphrecError(f"{model}: '{key}' must be >= 0, got {config[key]!r}")
    for key in unit:
        if not 0 <= float(config[key]) < 1:
            raise GraphrecError(f"{model}: '{key}' must be in [0, 1), got {config[key]!r}")


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
        check_table_memory(type(self).__name__, self.n_users, self.n_items, self.embedding_size)
        self.dataset_modalities = list(dataset.modalities)
        #: the training data's identity, recorded in checkpoints (RecDataset.fingerprint)
        self.data_fingerprint = dataset.fingerprint()
        self.graph: dgl.DGLGraph = self.build_graph(dataset)

    def check_graphs_loaded(self) -> None:
        """Raise when this model was built under :func:`graphs_from_state` and its graphs were never
        loaded (the state given had none): it would train or score on placeholder graphs."""
        if getattr(self, "graphs_pending", False):
            raise GraphrecError(f"{self.name or type(self).__name__}: the loaded state has no item graphs (a checkpoint of "
                                "another model or version); load it without graphs_from_state()")

    def add_id_embeddings(self) -> None:
        """Create the ID embedding tables ``user_emb`` ``(U, d)`` and ``item_emb`` ``(N, d)``, xavier-uniform."""
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, self.embedding_size)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, self.embedding_size)))

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

    def make_optimizer(self, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        """The trainer's optimiser: Adam over :meth:`optim_parameters` (LightGCN with ``sparse_embeddings``:
        SparseAdam, whose step touches only the batch's rows)."""
        return torch.optim.Adam(self.optim_parameters(), lr=lr, weight_decay=weight_decay)

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

    # ----- recommending -----
    def feature_widths(self) -> dict[str, int]:
        """``{modality: d_m}`` of the item features the model scores new items from (``{}``: none)."""
        return {}

    @torch.no_grad()
    def new_item_representations(self, new: NewItems) -> torch.Tensor:
        """``(n, d')`` representations of items added after training, comparable with the
        item rows of :meth:`representations`. Models without item features cannot have them."""
        raise GraphrecError(
            f"model '{self.name or type(self).__name__}' cannot score items added after training (it has no "
            "representation for an item without a trained embedding); use dgmrec, dgmrec_cold, content_knn, milk or sibrar"
        )

    @torch.no_grad()
    def iter_recommend(
        self,
        users: np.ndarray,
        k: int,
        exclude: sp.csr_matrix | None = None,
        new_items: NewItems | None = None,
        batch_size: int = 1024,
        item_chunk: int = 0,
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Top-``k`` items of ``users``, ``batch_size`` users at a time (memory ``O(batch x items)``).

        Args:
            users: ``(B,)`` user ids in ``0..U-1``.
            k: list length (capped at the number of items).
            exclude: ``(U, N)`` CSR of items never recommended to a user (e.g. the train
                interactions, :meth:`RecDataset.train_matrix`), or ``None``.
            new_items: items added after training; they get the ids ``N..N+n-1``
                (:meth:`new_item_representations`).
            batch_size: users scored at once.
            item_chunk: items scored at once (0 = all).

        Yields ``(users, items, scores)`` per batch: ``(b,)``, ``(b, k)`` int64 and ``(b, k)``
        float32, best first. Where a user has fewer than ``k`` items left, the tail is item
        ``-1`` with score ``-inf``. The scores are those of :meth:`scorer`.
        """
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        if len(users) and (users.min() < 0 or users.max() >= self.n_users):
            bad = users[(users < 0) | (users >= self.n_users)][0]
            raise GraphrecError(f"user {bad} is outside 0..{self.n_users - 1}")
        if k < 1:
            raise GraphrecError(f"k must be at least 1, got {k}")
        if batch_size < 1:
            raise GraphrecError(f"batch size must be at least 1, got {batch_size}")
        from graphrec.models.topk import top_k

        was_training = self.training
        self.eval()
        try:
            scorer = self.scorer()
            if new_items is not None:
                extra = self.new_item_representations(new_items).to(scorer.item.device, scorer.item.dtype)
                scorer = Scorer(scorer.user, torch.cat([scorer.item, extra], dim=0))
            if exclude is not None:
                exclude = sp.csr_matrix(exclude)
                if exclude.shape[0] != self.n_users:
                    raise GraphrecError(f"exclude has {exclude.shape[0]} rows for {self.n_users} users")
            for lo in range(0, len(users), batch_size):
                ub = users[lo : lo + batch_size]
                v, i = top_k(scorer, ub, exclude[ub] if exclude is not None else None, k, item_chunk=item_chunk)
                i = i.numpy().astype(np.int64)
                v = v.numpy().astype(np.float32)
                i[~np.isfinite(v)] = -1
                yield ub, i, v
        finally:
            self.train(was_training)

    def recommend(
        self,
        users: np.ndarray,
        k: int,
        exclude: sp.csr_matrix | None = None,
        new_items: NewItems | None = None,
        batch_size: int = 1024,
        item_chunk: int = 0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(items, scores)``, each ``(B, k)``, of :meth:`iter_recommend` for all ``users`` at once."""
        items, scores = [], []
        for _, i, v in self.iter_recommend(users, k, exclude, new_items, batch_size, item_chunk):
            items.append(i)
            scores.append(v)
        kk = min(k, self.n_items + (new_items.n if new_items is not None else 0))
        if not items:
            return np.zeros((0, kk), dtype=np.int64), np.zeros((0, kk), dtype=np.float32)
        return np.concatenate(items), np.concatenate(scores)

    # ----- hooks -----
    def on_train_start(self, trainer: "Trainer") -> None:
        """Called once after the optimiser is built (create extra optimisers here)."""

    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None:
        """Called before every epoch's first batch (DGMRec: CLUB steps, generation, refinement)."""

    def before_evaluation(self, trainer: "Trainer", split: str) -> None:
        """Called before an evaluation of ``split`` during training."""

    def get_epoch_state(self) -> Any:
        """What :meth:`on_epoch_start` made that the state dict does not hold (tensors and plain data), for a
        mid-epoch resume state (:mod:`graphrec.train.resume`); ``None`` (the default) = nothing."""
        return None

    def set_epoch_state(self, state: Any) -> None:
        """Take back a :meth:`get_epoch_state` (after the state dict is loaded): a resumed partial epoch does
        not run :meth:`on_epoch_start` again."""
        if state is not None:
            from graphrec.errors import GraphrecError

            raise GraphrecError(f"{type(self).__name__} keeps no epoch state, but the saved run has one")
