"""The training loop (spec 2.2): Adam, BPR batches, periodic evaluation, early stopping.

Per epoch: model hook ``on_epoch_start`` -> callbacks -> shuffled BPR batches
(zero grad, loss, backward, Adam step; a non-finite loss aborts; between batches, every
``resume_every_minutes`` / ``resume_every_batches``, the callbacks' ``on_mid_epoch``) -> LR scheduler
step -> every ``eval_step`` epochs ``before_evaluation`` + validation. Early
stopping counts evaluations whose validation ``valid_metric`` (rounded to 4
decimals) is not strictly better than the best; it stops when the counter exceeds
``stopping_step`` (and not before epoch ``stopping_min_epochs``). At the end the best
state is restored, the model hook ``before_evaluation(trainer, "test")`` runs, and the model is
evaluated on test (this equals the authors' "test metrics at the best validation epoch", since
the whole model state, graphs included, is restored).

The loop runs from :attr:`Trainer.loop` (a :class:`LoopState`), so a trainer restored by
:func:`graphrec.train.resume.restore_trainer` continues where a saved one stopped; DGL's RNG is
reseeded from ``(seed, epoch)`` every epoch since DGL cannot save its state. After each epoch's
bookkeeping every callback's ``on_epoch_logged`` sees the finished epoch (the point a resumed run
continues from; :class:`graphrec.train.resume.RunCheckpointer` writes the run folder there).
Mid-epoch: when ``resume_every_minutes`` (wall clock since the last resume state, default 10) or
``resume_every_batches`` (default 0 = off) says so, the trainer sets :attr:`Trainer.position` (an
:class:`EpochPosition`: epoch, batches done, the partial loss totals, the sampler's RNG state at the
epoch start) and calls every callback's ``on_mid_epoch`` between two batches (never after the last
one: the epoch's end is the epoch-boundary write). A trainer restored from such a state continues the
epoch at its next batch: the epoch's batch stream is regenerated from the saved sampler state (its
shuffle and negatives are drawn up front, so skipping the consumed batches costs no model work), the
model's ``on_epoch_start`` is not run again (its result is in the model state and
``get_epoch_state``), and the global RNGs are those of the saved batch. DGL's RNG cannot be restored
mid-epoch: it is reseeded from ``(seed, epoch, batch)``, so models that draw from it inside an epoch
(``sampler: dgl``) continue with other, equally random neighbourhoods.
With ``progress`` and a console that is not a terminal, one plain line per evaluation replaces the
progress bars (:mod:`graphrec.train.loggers`).

Data-parallel (``dist`` with ``world_size > 1``, :mod:`graphrec.train.distributed`): every rank
draws the same global batches and back-propagates its share of each batch's loss; one
all-reduce sums the gradients, so every rank takes the single-process Adam step of the global
batch. ``on_epoch_start``/``before_evaluation`` run on rank 0 and are broadcast; evaluation
users are split over the ranks and the metric sums gathered; early stopping therefore decides
identically everywhere. Callbacks run on every rank (``trainer.dist.is_main`` tells rank 0).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRSampler
from graphrec.errors import GraphrecError
from graphrec.eval.evaluator import EvalResult, EvalSums, Evaluator
from graphrec.models.base import RecModel
from graphrec.train.distributed import (
    SINGLE,
    DistContext,
    all_gather,
    allreduce_gradients,
    broadcast_state,
    loss_contribution,
    run_on_main,
)
from graphrec.train.interrupt import backward
from graphrec.train.optim import sparse_parameters
from graphrec.train.seed import (
    resolve_device,
    resolve_threads,
    set_deterministic,
    set_seed,
)


class Callback:
    """Hooks around training; subclass and override what you need."""

    def on_train_start(self, trainer: "Trainer") -> None: ...

    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None: ...

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, float]) -> None: ...

    def on_evaluate(self, trainer: "Trainer", epoch: int, result: EvalResult) -> None: ...

    def on_epoch_logged(self, trainer: "Trainer", epoch: int, record: dict[str, Any], evaluated: bool, improved: bool) -> None:
        """After the epoch's bookkeeping: ``record`` is its history row, :attr:`Trainer.loop` is complete
        (the point a resumed run continues from); ``evaluated``/``improved``: validation ran / set a new best."""

    def on_batch_end(self, trainer: "Trainer", epoch: int, batch: int, n_batches: int, loss: float) -> None:
        """After each training batch of epoch ``epoch`` (0-based): ``batch`` of ``n_batches`` done, ``loss`` the
        epoch's running mean loss so far (on rank 0 under ``--distributed``: its share). Keep it cheap."""

    def on_mid_epoch(self, trainer: Trainer, epoch: int, batch: int) -> None:
        """Between two batches of epoch ``epoch`` (0-based), ``batch`` batches done, when a mid-epoch resume
        state is due (``resume_every_minutes`` / ``resume_every_batches``); :attr:`Trainer.position` says where.
        Under ``--distributed`` every rank calls it at the same batch (rank 0 writes)."""

    def on_train_end(self, trainer: "Trainer", result: "FitResult") -> None: ...


@dataclass
class FitResult:
    """Outcome of :meth:`Trainer.fit`."""

    best_epoch: int
    best_valid: EvalResult | None
    test: EvalResult | None
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "stopped_early": self.stopped_early,
            "seconds": round(self.seconds, 3),
            "valid": self.best_valid.to_dict() if self.best_valid else None,
            "test": self.test.to_dict() if self.test else None,
            "history": self.history,
        }


@dataclass
class LoopState:
    """Where the epoch loop stands: everything besides model, optimiser and RNGs that a resumed run needs.

    ``next_epoch``: epochs done (0-based index of the next one); ``best_score``/``best_epoch``/``best_valid``:
    the best validation so far (``best_epoch`` 1-based, ``-1`` before the first evaluation); ``counter``:
    evaluations without improvement (early stopping); ``elapsed``: training seconds so far.
    """

    next_epoch: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    best_valid: EvalResult | None = None
    counter: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0
    stopped: bool = False


@dataclass
class EpochPosition:
    """Where a partial epoch stands (a mid-epoch resume state, :mod:`graphrec.train.resume`).

    ``epoch``: 0-based epoch; ``batch``: batches done (the next one's index); ``n_batches``/``batch_size``:
    the epoch's batching (a state is continued only with the same); ``totals``: the running sums of the
    loss terms over the batches done (as :meth:`Trainer.train_epoch` averages them; under
    ``--distributed`` summed over the ranks); ``running``: sum of the batches' total losses (the progress
    bar's mean); ``seconds``: time spent in the epoch so far; ``sampler_rng``: the BPR sampler's RNG state
    at the epoch start (it regenerates the epoch's shuffle and negatives).
    """

    epoch: int
    batch: int
    n_batches: int
    batch_size: int
    totals: dict[str, float]
    running: float
    seconds: float
    sampler_rng: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch": self.batch, "n_batches": self.n_batches, "batch_size": self.batch_size,
                "totals": dict(self.totals), "running": self.running, "seconds": self.seconds, "sampler_rng": self.sampler_rng}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EpochPosition:
        return cls(int(d["epoch"]), int(d["batch"]), int(d["n_batches"]), int(d["batch_size"]),
                   {str(k): float(v) for k, v in d["totals"].items()}, float(d["running"]), float(d["seconds"]),
                   dict(d["sampler_rng"]))


#: the clock of the ``resume_every_minutes`` trigger (tests patch it)
clock = time.monotonic
# off a terminal, a plain ``batch ...`` line at most this often within an epoch (graphrec.train.loggers)
BATCH_LINE_SECONDS = 60.0


def reseed_dgl(seed: int, epoch: int, batch: int = 0) -> None:
    """Seed DGL's RNG from ``(seed, epoch)`` (DGL offers no way to save and restore its state); a resumed
    partial epoch from ``(seed, epoch, batch)`` (``batch`` > 0: batches done)."""
    try:
        import dgl

        dgl.seed((int(seed) * 1_000_003 + int(epoch) + int(batch) * 7_919) % (2**31))
    except Exception:  # noqa: BLE001 - best-effort, as in set_seed
        pass


def _metric_key(name: str) -> str:
    return name.lower()


def host_copy(state: dict[str, Any]) -> dict[str, Any]:
    """A copy of a ``state_dict`` whose tensors are in host memory (``load_state_dict`` copies them back to
    the parameters' device); other entries (a module's extra state) are deep-copied. Keeps the
    ``OrderedDict`` and its ``_metadata``."""
    out = copy.copy(state)
    for k, v in state.items():
        out[k] = v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else copy.deepcopy(v)
    return out


class Trainer:
    """Trains a :class:`RecModel` on a :class:`RecDataset` with the resolved ``config``.

    Args:
        callbacks: extra :class:`Callback` s.
        console: rich console for progress and tables (``None`` = stderr).
        progress: show progress (rank 0 only when distributed): bars when the console is a terminal,
            else one plain line per evaluation (:mod:`graphrec.train.loggers`).
        dist: this process's place in a data-parallel group (default: a single process).
    """

    def __init__(
        self,
        model: RecModel,
        dataset: RecDataset,
        config: dict[str, Any],
        callbacks: list[Callback] | tuple[Callback, ...] = (),
        console: Console | None = None,
        progress: bool = True,
        dist: DistContext | None = None,
    ) -> None:
        self.config = config
        self.dataset = dataset
        self.dist = dist or SINGLE
        threads = int(config.get("threads", 0))
        if not self.dist.enabled or threads > 0:  # data-parallel ranks otherwise share the cores (distributed.py)
            torch.set_num_threads(resolve_threads(threads))
        self.device = resolve_device(str(config.get("device", "auto")))
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)  # one GPU per rank
        self.model = model.to_device(self.device)
        self.callbacks = list(callbacks)
        self.console = console or Console(stderr=True)
        # progress bars on a terminal; elsewhere (redirected, nohup, batch jobs) one plain line per evaluation
        self.show_progress = progress and self.dist.is_main and self.console.is_terminal
        if progress and self.dist.is_main and not self.console.is_terminal:
            from graphrec.train.loggers import LineLogger, console_sink

            self.callbacks.append(LineLogger(console_sink(self.console), batch_every_seconds=BATCH_LINE_SECONDS))
        if self.dist.is_main:  # one warning line when a loss term runs away (graphrec.train.loss_watch)
            from graphrec.train.loss_watch import LossTermWatch

            self.callbacks.append(LossTermWatch())
        self.rng = set_seed_rng(config)
        set_deterministic(bool(config.get("deterministic", True)))
        self.sampler = BPRSampler(dataset.train, dataset.n_items, exclude_items=dataset.new_items, rng=self.rng)
        self.evaluator = Evaluator(
            dataset,
            topk=config.get("topk", [10, 20, 50]),
            batch_size=int(config.get("eval_batch_size", 2048)),
            mask_valid_in_test=bool(config.get("eval_mask_valid_in_test", True)),
            item_chunk=int(config.get("eval_item_chunk", 0)),
        )
        self.valid_metric = _metric_key(str(config.get("valid_metric", "recall@20")))
        known = {f"{m}@{k}" for m in ("recall", "ndcg", "precision", "hit", "map") for k in self.evaluator.topk}
        if self.valid_metric not in known:
            raise GraphrecError(f"valid_metric '{self.valid_metric}' is not computed; choose one of {', '.join(sorted(known))}")
        self.optimizer = self.model.make_optimizer(float(config["learning_rate"]), float(config.get("weight_decay", 0.0)))
        #: row-sparse tables (sparse_embeddings: SparseAdam, MixedAdam): ranks all-gather their row gradients
        self._sparse_params = sparse_parameters(self.optimizer)
        a, b = (list(config.get("learning_rate_scheduler") or [1.0, 50]) + [50])[:2]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda e: float(a) ** (e / float(b)))
        self.epoch = 0
        self.loop = LoopState()
        #: mid-epoch resume states: wall-clock seconds (0 = off) and batches (0 = off) between two
        self.resume_every_seconds = 60.0 * float(config.get("resume_every_minutes", 0) or 0)
        self.resume_every_batches = int(config.get("resume_every_batches", 0) or 0)
        #: where the epoch stands while the callbacks' ``on_mid_epoch`` run (else ``None``)
        self.position: EpochPosition | None = None
        #: a restored partial epoch that :meth:`fit` continues (set by :func:`graphrec.train.resume.restore_trainer`)
        self.resume_at: EpochPosition | None = None
        #: :data:`clock` at the last resume state written (:meth:`mark_resume_written`) or the start of :meth:`fit`
        self.last_resume_write = clock()
        self._fit_t0 = time.perf_counter()
        self._epoch_t0 = time.perf_counter()
        #: the model state at the best validation so far (restored at the end)
        self.best_state: dict[str, Any] | None = None
        self.model.on_train_start(self)
        broadcast_state(self.model, self.dist)  # every rank starts from rank 0's weights

    def keep_best_state(self) -> None:
        """Keep the model's current state as the best so far (restored at the end of :meth:`fit`): a copy
        in host memory, so that a model on a GPU is not held twice on the device, made after the
        previous best is dropped, so that two copies never coexist (at 10^6 items a DGMRec state is
        over 1 GB)."""
        self.best_state = None
        self.best_state = host_copy(self.model.state_dict())

    def evaluate(self, split: str) -> EvalResult:
        self.model.eval()
        with torch.no_grad():
            scorer = self.model.scorer()
            if self.dist.enabled:  # each rank ranks its slice of the users; the sums are gathered
                users = np.array_split(self.evaluator.users(split), self.dist.world_size)[self.dist.rank]
                result = EvalSums.merge(all_gather(self.evaluator.evaluate_sums(scorer, split, users), self.dist)).result()
            else:
                result = self.evaluator.evaluate(scorer, split)
        self.model.train()
        return result

    def _model_hook(self, name: str, *args) -> None:
        """Call ``model.<name>(trainer, *args)``; when distributed, on rank 0 only and broadcast the result."""
        hook = getattr(self.model, name)
        if not self.dist.enabled or getattr(type(self.model), name) is getattr(RecModel, name):
            hook(self, *args)
        else:
            run_on_main(self.model, self.dist, lambda: hook(self, *args))

    def mark_resume_written(self) -> None:
        """Restart the ``resume_every_minutes`` clock (a resume state was just written)."""
        self.last_resume_write = clock()

    def _mid_epoch_due(self, done: int, n_batches: int) -> bool:
        """Whether a mid-epoch resume state is due after ``done`` of ``n_batches`` batches (never after the
        last); under ``--distributed`` rank 0's clock decides for every rank."""
        if done >= n_batches:
            return False
        due = (self.resume_every_batches > 0 and done % self.resume_every_batches == 0) or (
            self.resume_every_seconds > 0 and clock() - self.last_resume_write >= self.resume_every_seconds)
        if self.dist.enabled:
            import torch.distributed as tdist

            flag = torch.tensor([1 if due and self.dist.is_main else 0], dtype=torch.int64,
                                device=self.device if self.dist.backend == "nccl" else "cpu")
            tdist.broadcast(flag, src=0)
            due = bool(flag.item())
        return due

    def _summed_over_ranks(self, totals: dict[str, float]) -> dict[str, float]:
        """Loss sums of this rank's batch shares, summed over the ranks under ``--distributed`` (else as they are)."""
        if not self.dist.enabled:
            return totals
        summed: dict[str, float] = {}
        for part in all_gather(totals, self.dist):
            for k, v in part.items():
                summed[k] = summed.get(k, 0.0) + v
        return summed

    def _mid_epoch(self, position: EpochPosition) -> None:
        """Call the callbacks' ``on_mid_epoch`` with :attr:`position` set (totals summed over the ranks)."""
        position.totals = self._summed_over_ranks(position.totals)
        self.loop.elapsed = time.perf_counter() - self._fit_t0
        self.position = position
        try:
            for cb in self.callbacks:
                cb.on_mid_epoch(self, position.epoch, position.batch)
        finally:
            self.position = None
        self.mark_resume_written()

    def train_epoch(self, progress: Progress | None = None, task=None, start: EpochPosition | None = None) -> dict[str, float]:
        """One epoch of BPR batches; the mean of every loss term over them. ``start``: a partial epoch to
        continue (its batch stream is regenerated and the batches done skipped, see the module docstring)."""
        self.model.train()
        bs = int(self.config["train_batch_size"])
        n_batches = self.sampler.n_batches(bs)
        if start is not None:
            self.sampler.set_rng_state(start.sampler_rng)
            totals: dict[str, float] = dict(start.totals)
            n, running = start.batch, start.running
        else:
            totals, n, running = {}, 0, 0.0
        epoch_rng = self.sampler.get_rng_state()  # the epoch's stream, for a mid-epoch resume state
        mid_epoch = self.resume_every_seconds > 0 or self.resume_every_batches > 0
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        for batch in self.sampler.epoch(bs, start=n):
            batch = batch.to(self.device)
            self.optimizer.zero_grad(set_to_none=True)
            if self.dist.enabled:  # this rank's share of the global batch; gradients summed over ranks
                losses = loss_contribution(self.model, batch, self.dist)
                if losses["loss"].requires_grad:
                    backward(losses["loss"])
                value = allreduce_gradients(params, losses["loss"], sparse=self._sparse_params)
            else:
                losses = self.model.loss(batch)
                value = float(losses["loss"].detach())
            if not math.isfinite(value):
                raise GraphrecError(
                    f"training diverged: loss is {value} at epoch {self.epoch + 1}; lower learning_rate or check the features"
                )
            if not self.dist.enabled:
                backward(losses["loss"])
            self.optimizer.step()
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach())
            n += 1
            running += value
            if progress is not None:
                progress.update(task, advance=1, loss=running / n)
            for cb in self.callbacks:
                cb.on_batch_end(self, self.epoch, n, n_batches, running / n)
            if mid_epoch and self._mid_epoch_due(n, n_batches):
                self._mid_epoch(EpochPosition(self.epoch, n, n_batches, bs, dict(totals), running,
                                              time.perf_counter() - self._epoch_t0, epoch_rng))
        self.scheduler.step()
        totals = self._summed_over_ranks(totals)  # per-rank shares summed: the losses of the global batches
        return {k: v / max(n, 1) for k, v in totals.items()}

    def fit(self) -> FitResult:
        """Train from :attr:`loop` (epoch 0, or where a resumed run stopped) to the end; see the module docstring."""
        cfg = self.config
        epochs = int(cfg["epochs"])
        eval_step = max(1, int(cfg.get("eval_step", 1)))
        stopping_step = int(cfg.get("stopping_step", 20))
        min_epochs = int(cfg.get("stopping_min_epochs", 0))
        seed = int(cfg.get("seed", 2024))
        st = self.loop
        t0 = time.perf_counter() - st.elapsed
        self._fit_t0 = t0
        resume_at, self.resume_at = self.resume_at, None
        for cb in self.callbacks:
            cb.on_train_start(self)
        self.mark_resume_written()
        progress = self._progress()
        self.epoch = max(st.next_epoch - 1, 0)
        with progress:
            epoch_task = progress.add_task("epochs", total=epochs, completed=st.next_epoch, loss=float("nan"), info="")
            batch_task = progress.add_task("batches", total=self.sampler.n_batches(int(cfg["train_batch_size"])), loss=float("nan"), info="")
            for epoch in range(st.next_epoch, 0 if st.stopped else epochs):
                self.epoch = epoch
                start = resume_at if resume_at is not None and resume_at.epoch == epoch else None
                resume_at = None
                te = time.perf_counter() - (start.seconds if start is not None else 0.0)
                self._epoch_t0 = te
                if start is None:
                    reseed_dgl(seed, epoch)  # DGL's RNG has no get/set state: a per-epoch seed makes resuming exact
                    self._model_hook("on_epoch_start", epoch)
                else:  # a partial epoch: its on_epoch_start ran before the state was saved
                    reseed_dgl(seed, epoch, start.batch)
                for cb in self.callbacks:
                    cb.on_epoch_start(self, epoch)
                progress.reset(batch_task, description=f"epoch {epoch + 1}", completed=start.batch if start is not None else 0)
                logs = self.train_epoch(progress, batch_task, start=start)
                logs["seconds"] = time.perf_counter() - te
                record: dict[str, Any] = {"epoch": epoch + 1, **{k: round(v, 6) for k, v in logs.items()}}
                for cb in self.callbacks:
                    cb.on_epoch_end(self, epoch, logs)
                evaluated = improved = False
                if (epoch + 1) % eval_step == 0:
                    evaluated = True
                    self._model_hook("before_evaluation", "valid")
                    valid = self.evaluate("valid")
                    score = round(valid.metrics[self.valid_metric], 4)
                    record[f"valid_{self.valid_metric}"] = score
                    for cb in self.callbacks:
                        cb.on_evaluate(self, epoch, valid)
                    if score > st.best_score:
                        improved = True
                        st.best_score, st.best_epoch, st.best_valid, st.counter = score, epoch + 1, valid, 0
                        self.keep_best_state()
                    else:
                        st.counter += 1
                    progress.update(epoch_task, info=f"{self.valid_metric} {score:.4f} (best {st.best_score:.4f} @ {st.best_epoch})")
                st.history.append(record)
                st.next_epoch = epoch + 1
                st.stopped = st.counter > stopping_step and epoch + 1 >= min_epochs
                st.elapsed = time.perf_counter() - t0
                for cb in self.callbacks:
                    cb.on_epoch_logged(self, epoch, record, evaluated, improved)
                progress.update(epoch_task, advance=1, loss=logs.get("loss", float("nan")))
                if st.stopped:
                    break
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
            best_epoch, best_valid = st.best_epoch, st.best_valid
        else:  # no evaluation happened (epochs < eval_step): evaluate the final model
            self._model_hook("before_evaluation", "valid")
            best_valid = self.evaluate("valid")
            best_epoch = self.epoch + 1
        self._model_hook("before_evaluation", "test")  # e.g. dgmrec_cold calibrates its cold items here
        test = self.evaluate("test")
        result = FitResult(best_epoch, best_valid, test, self.epoch + 1, st.stopped, list(st.history), time.perf_counter() - t0)
        for cb in self.callbacks:
            cb.on_train_end(self, result)
        return result

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("[bold blue]{task.description:>10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            disable=not self.show_progress,
            transient=False,
        )


def set_seed_rng(config: dict[str, Any]):
    return set_seed(int(config.get("seed", 2024)))


def summary_table(result: FitResult, title: str = "results") -> Table:
    """A rich table of the best-validation and test metrics."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("valid", justify="right")
    table.add_column("test", justify="right")
    names = list((result.test or result.best_valid).metrics) if (result.test or result.best_valid) else []
    for name in names:
        v = result.best_valid.metrics.get(name) if result.best_valid else None
        t = result.test.metrics.get(name) if result.test else None
        table.add_row(name, f"{v:.4f}" if v is not None else "-", f"{t:.4f}" if t is not None else "-")
    return table


def groups_table(res: EvalResult, metrics: tuple[str, ...] = ("recall@20", "ndcg@20")) -> Table:
    table = Table(title=f"{res.split} by item group")
    table.add_column("group")
    table.add_column("users", justify="right")
    for m in metrics:
        table.add_column(m, justify="right")
    for g, vals in res.groups.items():
        table.add_row(g, str(res.group_users.get(g, 0)), *(f"{vals.get(m, float('nan')):.4f}" for m in metrics))
    return table
