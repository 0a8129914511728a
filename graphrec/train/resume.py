"""Resumable runs: the state ``graphrec fit --resume`` continues from, and the callback that writes it.

After every evaluation :class:`RunCheckpointer` writes, atomically and with SIGINT/SIGTERM held back
(:func:`graphrec.train.interrupt.critical`), in this order: ``history.jsonl``, ``resume.pt``, ``model.pt``
(when the evaluation set a new best: the best-so-far checkpoint that ``graphrec evaluate`` reads) and
``run.json``. A resumed run whose best epoch is its current one rewrites ``model.pt`` first (a hard kill
between the two writes can leave an older one). ``resume.pt`` holds (:func:`trainer_state`)::

    {"format": 1, "kind": "graphrec-resume", "graphrec_version", "config", "dataset", "data_fingerprint",
     "model": state_dict (the current epoch's; extra state as plain data),
     "model_optimizers": {attribute: state_dict},     # optimisers the model keeps (DGMRec's CLUB Adam)
     "model_resume": ...,                             # model.get_resume_state() where a model defines it
     "optimizer", "scheduler",                        # the trainer's Adam and LR scheduler
     "sampler_rng": numpy Generator state (BPR negatives and shuffling),
     "rng": {"python", "numpy", "torch", "cuda"},     # global RNG states
     "loop": {next_epoch, best_score, best_epoch, best_valid, counter, history, elapsed, stopped},
     "best_is_current": bool,                         # the best epoch is the current one
     "best": state_dict | None,                       # else the best epoch's model state
     "position": None | {epoch, batch, n_batches, batch_size, totals, running, seconds, sampler_rng,
                         "model_epoch": model.get_epoch_state()}}

``"position"`` (format 2; absent or ``None`` in format 1, the epoch-boundary states, which still load) is a
mid-epoch state: ``batch`` of epoch ``epoch`` (0-based; ``loop.next_epoch`` equals it) are done, the
model, optimisers and RNGs are those after that batch, ``sampler_rng`` is the BPR sampler's state at the
epoch start (:class:`graphrec.train.trainer.EpochPosition`) and ``model_epoch`` what the model's
``on_epoch_start`` made that its state dict does not hold (SGL's views, FREEDOM's pruned graph, LATTICE's
epoch graph, sampled DGMRec's control-variate tables; ``None`` for most models). ``best_is_current`` is
then false (the model has moved on since the best epoch). :class:`RunCheckpointer` writes it from the
trainer's ``on_mid_epoch`` (``resume_every_minutes``, ``resume_every_batches``), with ``run.json``'s
``batch``; a resumed run continues at the next batch with the same metrics as an uninterrupted one
(except with DGL's neighbour sampler, whose RNG cannot be saved: module docstring of
:mod:`graphrec.train.trainer`). A position that does not fit the run (another batch size or train
split) is a one-line error.

Everything in it is a tensor or plain Python data, so it loads with ``torch.load(weights_only=True)``:
it goes through the checkpoint encoding (:func:`graphrec.train.checkpoint.to_plain` / ``from_plain``: numpy
arrays of any dtype, 0-d and non-native byte order included, as tagged tensors; numpy's MT19937 key is such
a uint32 array). ``"data_fingerprint"`` (:meth:`RecDataset.fingerprint`) makes resuming on other data an
error, as for ``graphrec evaluate``. A damaged file is a one-line error. DGL's RNG has no state to
save; the trainer reseeds it from ``(seed, epoch)`` at every epoch instead. With the same seed and
thread count a resumed run ends with the same metrics, bit for bit, as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

import graphrec
from graphrec.errors import GraphrecError
from graphrec.eval.evaluator import EvalResult
from graphrec.train.checkpoint import check_fingerprint, from_plain, to_plain
from graphrec.train.interrupt import critical
from graphrec.train.run_folder import RunFolder
from graphrec.train.trainer import Callback, EpochPosition, LoopState, Trainer

FORMAT = 1
#: the format of a mid-epoch state (older graphrec versions refuse it instead of resuming it at the epoch start)
FORMAT_MID_EPOCH = 2
KIND = "graphrec-resume"
RESUME_FILE = "resume.pt"


# ----------------------------------------------------------------------------- plain data
def _plain(obj: Any, where: str) -> Any:
    """:func:`graphrec.train.checkpoint.to_plain`, with a one-line :class:`GraphrecError` for what it cannot store."""
    try:
        return to_plain(obj, where)
    except TypeError as exc:
        raise GraphrecError(f"cannot save {where} for resuming: {exc}") from None


def _state_dict_plain(state: dict[str, Any]) -> dict[str, Any]:
    return _plain(state, "model state")


# ----------------------------------------------------------------------------- RNGs
def rng_states() -> dict[str, Any]:
    """python, numpy (global; its MT19937 key is a uint32 array) and torch (CPU and CUDA) RNG states, as plain data."""
    return {
        "python": _plain(random.getstate(), "python RNG state"),
        "numpy": _plain(np.random.get_state(), "numpy RNG state"),
        "torch": torch.get_rng_state(),
        "cuda": [s.cpu() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Set the RNG states of :func:`rng_states` (as :func:`read_resume` returns them: decoded)."""
    py = states["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state(tuple(states["numpy"]))
    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# ----------------------------------------------------------------------------- trainer state
def _model_optimizers(model) -> dict[str, torch.optim.Optimizer]:
    """Optimisers a model keeps as attributes (DGMRec's ``club_optimizer``)."""
    return {k: v for k, v in vars(model).items() if isinstance(v, torch.optim.Optimizer)}


def trainer_state(trainer: Trainer) -> dict[str, Any]:
    """Everything a resumed run needs, after the epoch :attr:`Trainer.loop` ends at (module docstring)."""
    st = trainer.loop
    model = trainer.model
    pos = trainer.position
    best_is_current = st.best_epoch == st.next_epoch and pos is None
    position = None
    if pos is not None:
        get = getattr(model, "get_epoch_state", None)
        position = {**_plain(pos.to_dict(), "epoch position"),
                    "model_epoch": _plain(get(), "model epoch state") if callable(get) else None}
    return {
        "format": FORMAT if pos is None else FORMAT_MID_EPOCH,
        "kind": KIND,
        "graphrec_version": graphrec.__version__,
        "config": _plain(dict(trainer.config), "config"),
        "dataset": _plain(trainer.dataset.summary(), "dataset summary"),
        "data_fingerprint": _plain(trainer.dataset.fingerprint(), "data fingerprint"),
        "model": _state_dict_plain(model.state_dict()),
        "model_optimizers": {k: _plain(o.state_dict(), f"model optimiser '{k}'") for k, o in _model_optimizers(model).items()},
        "model_resume": _plain(model.get_resume_state(), "model resume state") if hasattr(model, "get_resume_state") else None,
        "optimizer": _plain(trainer.optimizer.state_dict(), "optimizer"),
        "scheduler": _plain(trainer.scheduler.state_dict(), "LR scheduler"),
        "sampler_rng": _plain(trainer.sampler.get_rng_state(), "sampler RNG"),
        "rng": rng_states(),
        "loop": {
            "next_epoch": st.next_epoch, "best_score": st.best_score, "best_epoch": st.best_epoch,
            "best_valid": st.best_valid.to_dict() if st.best_valid is not None else None,
            "counter": st.counter, "history": _plain(st.history, "history"), "elapsed": st.elapsed, "stopped": st.stopped,
        },
        "best_is_current": best_is_current,
        "best": _state_dict_plain(trainer.best_state) if not best_is_current and trainer.best_state is not None else None,
        "position": position,
    }


def save_resume(path: str | Path, trainer: Trainer, extra: dict[str, Any] | None = None, sync: bool = False) -> None:
    """Write :func:`trainer_state` (plus the top-level entries of ``extra``, already plain data) to ``path``
    atomically, streamed into the temporary file (no in-memory copy of the state). ``sync``: fsync it
    before it replaces ``path``, so a machine that goes down keeps one whole state."""
    from graphrec.data.interactions import atomic_writer

    state = trainer_state(trainer)
    state.update(extra or {})
    with atomic_writer(path, binary=True) as fh:
        torch.save(state, fh)
        if sync:
            fh.flush()
            os.fsync(fh.fileno())
    trainer.mark_resume_written()


#: keys every resume.pt has (``data_fingerprint``, ``model_optimizers`` and ``model_resume`` may be absent)
_REQUIRED = ("config", "dataset", "model", "optimizer", "scheduler", "sampler_rng", "rng", "loop", "best_is_current", "best")
#: what can go wrong when a damaged or hand-edited resume.pt is decoded and loaded
_MALFORMED = (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError)


def read_resume(path: str | Path) -> dict[str, Any]:
    """Load a ``resume.pt`` (``weights_only=True``) and decode it (:func:`~graphrec.train.checkpoint.from_plain`);
    one-line errors for missing, foreign or malformed files."""
    p = Path(path)
    if p.is_dir():
        p = p / RESUME_FILE
    if not p.is_file():
        raise GraphrecError(
            f"'{p.parent}' has no {RESUME_FILE}: the run ended before its first evaluation or mid-epoch state (start it again) "
            "or was not written by 'graphrec fit'"
        )
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise GraphrecError(f"{p}: not a graphrec resume file ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("kind") != KIND or state.get("format") not in (FORMAT, FORMAT_MID_EPOCH):
        raise GraphrecError(f"{p}: not a graphrec resume file (format {FORMAT} or {FORMAT_MID_EPOCH} expected)")
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise GraphrecError(f"{p}: malformed resume file (no {', '.join(missing)}); start the run again")
    try:
        state = from_plain(state)
    except _MALFORMED as exc:
        raise GraphrecError(f"{p}: malformed resume file ({_first_line(exc)}); start the run again") from None
    if not isinstance(state["config"], dict) or not isinstance(state["loop"], dict) or "model" not in state["config"]:
        raise GraphrecError(f"{p}: malformed resume file (no config or loop state); start the run again")
    if state.get("position") is not None and (state["format"] != FORMAT_MID_EPOCH or not isinstance(state["position"], dict)):
        raise GraphrecError(f"{p}: malformed resume file (a mid-epoch position in a format {state['format']} file); start the run again")
    return state


def position_of(state: dict[str, Any]) -> tuple[int, int]:
    """``(epochs done, batches done in the next epoch)`` of a resume state (the batches are 0 at an epoch boundary)."""
    pos = state.get("position")
    return int(state["loop"]["next_epoch"]), int(pos["batch"]) if pos else 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def restore_trainer(trainer: Trainer, state: dict[str, Any], where: str | Path = RESUME_FILE) -> None:
    """Put ``trainer`` (built from the same config and data) where ``state`` (:func:`read_resume`) was saved.

    The data must match the fingerprint recorded in ``state``
    (:func:`~graphrec.train.checkpoint.check_fingerprint`: sizes, feature dims, a hash of the train pairs);
    a state without one is checked by its dataset summary (counts) only. A malformed state is a one-line
    :class:`GraphrecError` naming ``where``. The RNGs are set last, so nothing between this and
    :meth:`Trainer.fit` may draw from them.
    """
    if state.get("data_fingerprint"):
        check_fingerprint(state["data_fingerprint"], trainer.dataset, where,
                          hint="resume with the --data-dir contents the run was trained on")
    elif state["dataset"] != from_plain(_plain(trainer.dataset.summary(), "dataset summary")):
        raise GraphrecError("the data differ from those the run was trained on (users, items or interactions); "
                            "resume with the same --data-dir contents")
    model = trainer.model
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise GraphrecError(f"the saved model state does not fit the model ({str(exc).splitlines()[0]})") from None
    except _MALFORMED as exc:
        raise GraphrecError(f"{where}: malformed resume file ({_first_line(exc)}); start the run again") from None
    model.check_graphs_loaded()  # built under graphrec.models.base.graphs_from_state: the state filled its graphs
    optimizers = _model_optimizers(model)
    try:
        for name, sd in (state.get("model_optimizers") or {}).items():
            if name not in optimizers:
                raise GraphrecError(f"the saved run has model optimiser '{name}', which the model does not create")
            optimizers[name].load_state_dict(sd)
        if state.get("model_resume") is not None:
            model.set_resume_state(state["model_resume"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
        trainer.sampler.set_rng_state(state["sampler_rng"])
        loop = state["loop"]
        bv = loop["best_valid"]
        trainer.loop = LoopState(
            next_epoch=int(loop["next_epoch"]), best_score=float(loop["best_score"]), best_epoch=int(loop["best_epoch"]),
            best_valid=EvalResult(**bv) if bv is not None else None, counter=int(loop["counter"]),
            history=list(loop["history"]), elapsed=float(loop["elapsed"]), stopped=bool(loop["stopped"]),
        )
        if state["best_is_current"]:
            trainer.keep_best_state()
        elif state.get("best") is not None:
            trainer.best_state = state["best"]
        trainer.epoch = max(trainer.loop.next_epoch - 1, 0)
        trainer.resume_at = _restore_position(trainer, state.get("position"), where)
        set_rng_states(state["rng"])
    except GraphrecError:
        raise
    except _MALFORMED as exc:
        raise GraphrecError(f"{where}: malformed resume file ({_first_line(exc)}); start the run again") from None


def _restore_position(trainer: Trainer, position: dict[str, Any] | None, where: str | Path) -> EpochPosition | None:
    """The partial epoch of a mid-epoch state (``None`` for an epoch-boundary one), checked against ``trainer``'s
    batching; the model's epoch state is set back."""
    if position is None:
        return None
    pos = EpochPosition.from_dict(position)
    bs = int(trainer.config["train_batch_size"])
    n_batches = trainer.sampler.n_batches(bs)
    if pos.epoch != trainer.loop.next_epoch or not 0 < pos.batch < pos.n_batches:
        raise GraphrecError(f"{where}: malformed resume file (batch {pos.batch} of {pos.n_batches} in epoch {pos.epoch + 1} "
                            f"after {trainer.loop.next_epoch} epoch(s)); start the run again")
    if (pos.batch_size, pos.n_batches) != (bs, n_batches):
        raise GraphrecError(f"the saved run stopped at batch {pos.batch} of {pos.n_batches} (batch size {pos.batch_size}); "
                            f"this one has {n_batches} batches of {bs}: resume with the settings and data the run was trained on")
    setter = getattr(trainer.model, "set_epoch_state", None)
    if position.get("model_epoch") is not None:
        if not callable(setter):
            raise GraphrecError(f"the saved run has a mid-epoch model state, which '{trainer.config.get('model')}' does not take")
        setter(position["model_epoch"])
    return pos


# ----------------------------------------------------------------------------- the callback
class RunCheckpointer(Callback):
    """Keeps a run folder resumable: ``history.jsonl`` every epoch; ``resume.pt``, the best-so-far
    ``model.pt`` and ``run.json`` after every evaluation; ``resume.pt`` and ``run.json`` mid-epoch when
    the trainer says so (module docstring).

    Args:
        run: the locked :class:`~graphrec.train.run_folder.RunFolder`.
        checkpoint_extra: extra keys of ``model.pt`` (``{"dataset": summary}``).
    """

    def __init__(self, run: RunFolder, checkpoint_extra: dict[str, Any] | None = None) -> None:
        self.run = run
        self.checkpoint_extra = dict(checkpoint_extra or {})

    def save_best(self, trainer: Trainer) -> None:
        """Write the current model as the best-so-far ``model.pt``."""
        from graphrec.train.checkpoint import save_checkpoint

        st = trainer.loop
        result = {"best_epoch": st.best_epoch, "valid": st.best_valid.to_dict() if st.best_valid else None, "partial": True}
        save_checkpoint(self.run.path / "model.pt", trainer.model, trainer.config, extra={**self.checkpoint_extra, "result": result})

    @contextlib.contextmanager
    def _writing(self):
        """Signals held back; a failed write (disk full, folder removed) is one line, not a traceback."""
        with critical():
            try:
                yield
            except OSError as exc:
                raise GraphrecError(f"cannot write the run folder '{self.run.path}': {exc.strerror or exc}") from None

    def _status(self, trainer: Trainer, batch: int) -> None:
        """``run.json`` after a resume state (``batch`` batches of the next epoch done: 0 at an epoch boundary)."""
        st = trainer.loop
        self.run.write_status("running", epoch=st.next_epoch, batch=batch, best_epoch=st.best_epoch,
                              best_valid={trainer.valid_metric: st.best_score}, elapsed=round(st.elapsed, 3))

    def on_epoch_logged(self, trainer: Trainer, epoch: int, record: dict[str, Any], evaluated: bool, improved: bool) -> None:
        with self._writing():
            self.run.write_history(trainer.loop.history)
            if not evaluated:
                return
            save_resume(self.run.path / RESUME_FILE, trainer)
            if improved:
                self.save_best(trainer)
            self._status(trainer, 0)

    def on_mid_epoch(self, trainer: Trainer, epoch: int, batch: int) -> None:
        """A mid-epoch ``resume.pt`` (``batch`` batches of epoch ``epoch`` done) and ``run.json``'s ``batch``."""
        with self._writing():
            save_resume(self.run.path / RESUME_FILE, trainer)
            self._status(trainer, batch)
