"""Training logs that work outside a terminal: plain evaluation lines and optional TensorBoard scalars.

The plain line (one per evaluation; printed instead of progress bars when stderr is not a terminal,
and always appended to a run folder's ``train.log``) is a stable, space-separated list of
``key=value`` tokens, in this order::

    epoch=3/50 loss=0.693147 recall@20=0.0123 best=0.0150 best_epoch=2 elapsed=12.3s

``epoch`` is ``done/max``; ``loss`` the epoch's mean training loss (6 decimals); the validation metric
(``valid_metric``, 4 decimals, the value early stopping compares) under its own name; ``best`` and
``best_epoch`` the best so far; ``elapsed`` the training seconds so far (a resumed run counts those
before the interrupt). The line at the end of a run starts with ``done``::

    done epochs=12 best_epoch=10 stopped_early=yes recall@20=0.0830 test_recall@20=0.0812 elapsed=61.0s

Off a terminal a long epoch also gets a progress line at most once a minute (``batch_every_seconds``;
on the console only, not in ``train.log``), starting with ``batch``: the epoch, batches done of the
epoch's, the running mean loss, the epoch's seconds so far and an estimate of the seconds left::

    batch epoch=1/1 batch=500/4132 loss=0.693147 elapsed=121.0s eta=879.2s

Parse a line with ``dict(t.split("=", 1) for t in line.split()[1:])`` (first token: ``epoch=...``,
``batch`` or ``done``; see :func:`parse_line`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from graphrec.errors import GraphrecError

if TYPE_CHECKING:  # pragma: no cover
    from graphrec.train.trainer import FitResult, Trainer

from graphrec.train.trainer import Callback

TENSORBOARD_HINT = 'pip install -e ".[tensorboard]"'


def eval_line(record: dict[str, Any], epochs: int, metric: str, best: float, best_epoch: int, elapsed: float) -> str:
    """The plain line of one evaluation (module docstring); ``record`` is the epoch's history row."""
    loss = record.get("loss")
    value = record.get(f"valid_{metric}")
    parts = [f"epoch={record['epoch']}/{epochs}", f"loss={loss:.6f}" if loss is not None else "loss=nan"]
    parts.append(f"{metric}={value:.4f}" if value is not None else f"{metric}=nan")
    parts += [f"best={best:.4f}", f"best_epoch={best_epoch}", f"elapsed={elapsed:.1f}s"]
    return " ".join(parts)


def done_line(result: "FitResult", metric: str) -> str:
    """The plain line at the end of a run (module docstring)."""
    parts = ["done", f"epochs={result.epochs_run}", f"best_epoch={result.best_epoch}",
             f"stopped_early={'yes' if result.stopped_early else 'no'}"]
    if result.best_valid is not None and metric in result.best_valid.metrics:
        parts.append(f"{metric}={result.best_valid.metrics[metric]:.4f}")
    if result.test is not None and metric in result.test.metrics:
        parts.append(f"test_{metric}={result.test.metrics[metric]:.4f}")
    parts.append(f"elapsed={result.seconds:.1f}s")
    return " ".join(parts)


def batch_line(epoch: int, epochs: int, batch: int, n_batches: int, loss: float, elapsed: float,
               done: int | None = None) -> str:
    """The plain progress line within an epoch (module docstring); ``epoch`` 1-based, ``elapsed`` the
    seconds of the last ``done`` batches (default: all ``batch``; fewer in a resumed partial epoch), from
    which the seconds left are estimated."""
    done = batch if done is None else done
    eta = elapsed / done * (n_batches - batch) if done > 0 else float("nan")
    return (f"batch epoch={epoch}/{epochs} batch={batch}/{n_batches} loss={loss:.6f} "
            f"elapsed={elapsed:.1f}s eta={eta:.1f}s")


def parse_line(line: str) -> tuple[str, dict[str, str]]:
    """``("epoch", {"epoch": "3/50", "loss": ...})``, ``("batch", {...})`` or ``("done", {...})`` for a plain line."""
    tokens = line.split()
    if not tokens:
        raise ValueError("empty line")
    if tokens[0] in ("done", "batch"):
        return tokens[0], dict(t.split("=", 1) for t in tokens[1:])
    return "epoch", dict(t.split("=", 1) for t in tokens)


class LineLogger(Callback):
    """Sends one plain line per evaluation, and one at the end, to each sink (a ``str -> None`` callable);
    with ``batch_every_seconds`` also a ``batch`` line within an epoch at most that often (by ``clock``),
    the first once that much time has passed since the epoch started."""

    def __init__(self, *sinks: Callable[[str], None], batch_every_seconds: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sinks = list(sinks)
        self.batch_every = batch_every_seconds
        self.clock = clock
        self._epoch_t0 = self._last = 0.0
        self._first: int | None = None

    def _emit(self, line: str) -> None:
        for sink in self.sinks:
            sink(line)

    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None:
        self._epoch_t0 = self._last = self.clock()
        self._first = None

    def on_batch_end(self, trainer: "Trainer", epoch: int, batch: int, n_batches: int, loss: float) -> None:
        if self.batch_every is None:
            return
        if self._first is None:  # batches done before this process's first (a resumed partial epoch)
            self._first = batch - 1
        now = self.clock()
        if batch >= n_batches or now - self._last < self.batch_every:
            return
        self._last = now
        self._emit(batch_line(epoch + 1, int(trainer.config["epochs"]), batch, n_batches, loss,
                              now - self._epoch_t0, done=batch - self._first))

    def on_epoch_logged(self, trainer: "Trainer", epoch: int, record: dict[str, Any], evaluated: bool, improved: bool) -> None:
        if evaluated:
            st = trainer.loop
            self._emit(eval_line(record, int(trainer.config["epochs"]), trainer.valid_metric, st.best_score,
                                 st.best_epoch, st.elapsed))

    def on_train_end(self, trainer: "Trainer", result: "FitResult") -> None:
        self._emit(done_line(result, trainer.valid_metric))


def console_sink(console) -> Callable[[str], None]:
    """A sink printing plain lines on a rich console (no markup, highlighting or wrapping)."""
    return lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True)


def require_tensorboard() -> None:
    """A one-line error, before anything is written, when the tensorboard package is missing."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise GraphrecError(f"--logger tensorboard needs the tensorboard package; install it with {TENSORBOARD_HINT}")


def summary_writer(log_dir: str | Path, purge_step: int | None = None):
    """A ``torch.utils.tensorboard.SummaryWriter`` (imported only here); a one-line error when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise GraphrecError(f"--logger tensorboard needs the tensorboard package; install it with {TENSORBOARD_HINT}") from None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


class TensorBoardLogger(Callback):
    """Scalars per epoch: ``train/<loss>``, ``time/epoch_seconds``, ``valid/<metric>`` (every validation
    metric), and ``test/<metric>`` at the best epoch when training ends.

    Args:
        writer: anything with ``add_scalar(tag, value, step)``, ``flush()`` and ``close()`` (a
            ``SummaryWriter``: :func:`summary_writer`).
    """

    def __init__(self, writer) -> None:
        self.writer = writer

    def on_evaluate(self, trainer: "Trainer", epoch: int, result) -> None:
        for name, value in result.metrics.items():
            self.writer.add_scalar(f"valid/{name}", float(value), epoch + 1)

    def on_epoch_logged(self, trainer: "Trainer", epoch: int, record: dict[str, Any], evaluated: bool, improved: bool) -> None:
        for key, value in record.items():
            if key == "epoch" or key.startswith("valid_") or not isinstance(value, (int, float)):
                continue
            self.writer.add_scalar("time/epoch_seconds" if key == "seconds" else f"train/{key}", float(value), epoch + 1)
        self.writer.flush()

    def on_train_end(self, trainer: "Trainer", result: "FitResult") -> None:
        if result.test is not None:
            for name, value in result.test.metrics.items():
                self.writer.add_scalar(f"test/{name}", float(value), result.best_epoch)
        self.writer.flush()
        self.writer.close()
