"""Mid-run resumption of ``graphrec bench`` / ``graphrec tune`` runs: ``<out>/logs/<id>.resume.pt``.

A bench worker (:mod:`graphrec.bench.worker`) keeps one resume state per run in progress, rewritten
atomically (and with SIGINT/SIGTERM held back, :func:`graphrec.train.interrupt.critical`) after every
epoch. It is the ``resume.pt`` of ``graphrec fit --resume`` (:func:`graphrec.train.resume.trainer_state`:
model, optimisers, scheduler, sampler and global RNG states, loop state with the full history; restored
by :func:`~graphrec.train.resume.restore_trainer`, bit-identical continuation for the same thread count)
plus a ``"bench"`` entry with what the record needs besides the trainer::

    {"format": 1,
     "identity": {"model", "variant", "seed", "retrieval", "plugins", "config", "graphrec_version"},
     "curve": [{"epoch", "recall@K", "ndcg@K", ...}],    # the record's valid_curve so far
     "eval_seconds": [...], "refine_seconds": [...],      # per evaluation / graph refinement so far
     "resumed_from_epoch": [...],                         # epochs done at each earlier resume
     "resumed_from_batch": [...],                         # and batches of the next epoch (0 = at its start)
     "peak_rss_mb": float, "peak_gpu_mb": float | None}  # the largest of the earlier processes

Mid-epoch, every ``resume_every_minutes`` (default 10) or ``resume_every_batches`` (trainer
``on_mid_epoch``), the worker writes the same state with the trainer's position (format 2 of
:mod:`graphrec.train.resume`); a rerun then continues at the next batch of that epoch.

A rerun of the same command continues the run from it when :func:`load_state` accepts it: the
identity (resolved config, threads included, how often states are written excepted: :data:`NOT_IDENTITY`;
model, variant, seed, plugins, graphrec version) and the
data fingerprint (:meth:`RecDataset.fingerprint`) are those of the run about to start. Anything else
(another config, other data, a damaged or foreign file) is set aside with one log line and the run
starts over from epoch 0. The worker deletes the state once the run's record is written; the runner
deletes a state whose run already has a record (a kill between the two writes) and temporary files
that a hard kill left behind in the middle of a write.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import graphrec
from graphrec.errors import GraphrecError

SUFFIX = ".resume.pt"
FORMAT = 1
#: the spec keys that define a run (besides graphrec's version and the data fingerprint)
IDENTITY_KEYS = ("model", "variant", "seed", "retrieval", "plugins", "config")
#: config keys that do not change what a run computes: a state saved with other values is continued
NOT_IDENTITY = ("resume_every_minutes", "resume_every_batches")


def state_path(logs_dir: Path, run_id: str) -> Path:
    """``<logs>/<id>.resume.pt``: the resume state of run ``run_id``."""
    return Path(logs_dir) / f"{run_id}{SUFFIX}"


def identity(spec: dict[str, Any]) -> dict[str, Any]:
    """What must be equal for a saved state to be continued: the resolved run plus graphrec's version (as JSON data)."""
    ident = {k: spec.get(k) for k in IDENTITY_KEYS}
    if isinstance(ident.get("config"), dict):
        ident["config"] = {k: v for k, v in ident["config"].items() if k not in NOT_IDENTITY}
    ident["graphrec_version"] = graphrec.__version__
    return json.loads(json.dumps(ident, sort_keys=True, default=str))


def identity_changes(saved: dict[str, Any], now: dict[str, Any], limit: int = 4) -> str:
    """``"config.learning_rate 0.001 -> 0.002, ..."``: what differs between two :func:`identity` values."""
    out: list[str] = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key, "(absent)"), now.get(key, "(absent)")
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(set(a) | set(b)):
                x, y = a.get(sub, "(absent)"), b.get(sub, "(absent)")
                if x != y:
                    out.append(f"{key}.{sub} {json.dumps(x, default=str)} -> {json.dumps(y, default=str)}")
        else:
            out.append(f"{key} {json.dumps(a, default=str)} -> {json.dumps(b, default=str)}")
    more = f", and {len(out) - limit} more" if len(out) > limit else ""
    return ", ".join(out[:limit]) + more


def load_state(path: Path, spec: dict[str, Any], dataset) -> tuple[dict[str, Any] | None, str | None]:
    """``(state, None)`` when ``path`` holds a state this run may continue, else ``(None, why)``
    (``why`` is ``None`` when there is no state at all). Never raises for a bad file."""
    from graphrec.train.checkpoint import check_fingerprint
    from graphrec.train.resume import read_resume

    path = Path(path)
    if not path.is_file():
        return None, None
    try:
        state = read_resume(path)
    except GraphrecError as exc:
        return None, f"the saved state is unreadable ({exc})"
    bench = state.get("bench")
    if not isinstance(bench, dict) or bench.get("format") != FORMAT or not isinstance(bench.get("identity"), dict):
        return None, "the saved state was not written by a bench worker of this version"
    diff = identity_changes(bench["identity"], identity(spec))
    if diff:
        return None, f"the run's spec changed since the state was saved ({diff})"
    if not state.get("data_fingerprint"):
        return None, "the saved state has no data fingerprint"
    try:
        check_fingerprint(state["data_fingerprint"], dataset, path, hint="the data changed")
    except GraphrecError as exc:
        return None, f"the data changed since the state was saved ({str(exc).split('(', 1)[-1].split(')')[0]})"
    return state, None


def save_state(path: Path, trainer, bench: dict[str, Any]) -> None:
    """Write :func:`graphrec.train.resume.trainer_state` plus ``{"bench": bench}`` to ``path`` atomically
    (:func:`~graphrec.train.resume.save_resume`: streamed, no in-memory copy of the state that would add
    to the peak RSS the record reports; synced before it replaces ``path``)."""
    from graphrec.train.checkpoint import to_plain
    from graphrec.train.resume import save_resume

    save_resume(path, trainer, {"bench": to_plain({"format": FORMAT, **bench}, "bench resume state")}, sync=True)


def saved_position(path: Path) -> tuple[int, int] | None:
    """``(epochs done, batches done in the next epoch)`` of the state at ``path``
    (:func:`graphrec.train.resume.position_of`; read lazily, tensors memory-mapped), or ``None``."""
    import torch

    from graphrec.train.resume import position_of

    try:
        return position_of(torch.load(str(path), map_location="cpu", weights_only=True, mmap=True))
    except Exception:  # noqa: BLE001 - absent, damaged, foreign: nothing to report
        return None


def describe_position(epochs: int, batches: int) -> str:
    """``"3"`` or ``"3 + 2 batch(es)"``: where a run resumes (epochs done, batches of the next epoch done)."""
    return f"{epochs} + {batches} batch(es)" if batches else str(epochs)


def remove_state(logs_dir: Path, run_id: str) -> None:
    """Delete the resume state of ``run_id`` and any temporary file a killed write left beside it."""
    path = state_path(logs_dir, run_id)
    path.unlink(missing_ok=True)
    remove_temporaries(logs_dir, run_id)


def remove_temporaries(logs_dir: Path, run_id: str) -> None:
    """Temporary files of interrupted atomic writes of the state (``.<id>.resume.pt.*.tmp``)."""
    for tmp in Path(logs_dir).glob(f".{run_id}{SUFFIX}.*.tmp"):
        try:
            os.unlink(tmp)
        except OSError:
            pass
