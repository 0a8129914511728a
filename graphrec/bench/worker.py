"""Train and measure one benchmark run in this process (the child of :mod:`graphrec.bench.runner`).

    python -m graphrec.bench.worker SPEC.json RECORD.json [PROGRESS.json [RESUME.pt]]

``SPEC.json`` holds the run (model, variant, protocol, seed, config files, overrides,
plugins, threads, retrieval). The record is written atomically to ``RECORD.json`` only when
the run finished, so an existing record means a finished run (the runner's resume rule).
``PROGRESS.json`` is rewritten after every epoch (epoch, epochs, validation score) for the
runner's progress bar. ``RESUME.pt`` (the runner passes ``<out>/logs/<id>.resume.pt``) is the
run's resume state, rewritten after every epoch and, within an epoch, every ``resume_every_minutes``
(default 10) or ``resume_every_batches``, and deleted once the record is written; a worker that finds
its own run's state there continues from it (:mod:`graphrec.bench.resume`), at the next batch of a
partial epoch, so a benchmark killed mid-run loses at most the last minutes of training. The record
says so: ``resumed_from_epoch`` (epochs done at each resume), ``resumed_from_batch`` (batches of the
next epoch done then, 0 at an epoch boundary), ``resumes``, ``resume_discarded`` (why a state found
was not continued). SIGINT/SIGTERM end the worker with exit code 128 + signal,
never in the middle of a write of the state.

Measured (see :func:`run_spec`): seconds per training epoch (the trainer's per-epoch time,
model hooks included — DGMRec's CLUB steps, generation and refinement — evaluation excluded;
mean over the epochs after the first), seconds per evaluation (every validation and the final
test evaluation), seconds per graph refinement (DGMRec), seconds in kNN top-k searches while
the model is built, and the process's peak resident memory (``ru_maxrss``).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


class ChildRunFailed(RuntimeError):
    """A measuring child process exited non-zero; ``stderr`` holds the tail of what it printed."""

    def __init__(self, cmd: list[str], returncode: int, stderr: str) -> None:
        super().__init__(f"{' '.join(cmd[:3])} ... exited {returncode}:\n{stderr}")
        self.stderr = stderr


def run_json_child(cmd: list[str], threads: int | None = None, cwd: str | None = None) -> dict[str, Any]:
    """Run a measuring child process (its own peak RSS, its own thread count) and parse its result.

    The child prints one JSON object as its last stdout line. ``threads`` sets ``OMP_NUM_THREADS``
    for it. Raises :class:`ChildRunFailed` (with the last 2,000 characters of stderr) on a
    non-zero exit. Used by the scripts in ``benchmarks/``.
    """
    import subprocess

    env = dict(os.environ) if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    if out.returncode != 0:
        raise ChildRunFailed(cmd, out.returncode, out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def timed_json_child(cmd: list[str], threads: int | None, console: Any, label: str) -> dict[str, Any]:
    """:func:`run_json_child` under a rich status line ``label``, with its wall time as ``wall_s``.

    A failed child is printed (red, with its stderr) and returned as ``{"error": stderr}``.
    """
    with console.status(label):
        t = time.perf_counter()
        try:
            rec = run_json_child(cmd, threads)
        except ChildRunFailed as exc:
            console.print(f"[red]{label} failed[/]:\n{exc.stderr}")
            return {"error": exc.stderr}
    rec["wall_s"] = round(time.perf_counter() - t, 1)
    return rec


def timed(fn: Callable, bucket: list[float]) -> Callable:
    """``fn`` wrapped so that the seconds of every call, finished or raising, are appended to ``bucket``."""

    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            bucket.append(time.perf_counter() - t)

    return wrapper


@contextmanager
def timed_knn(bucket: list[float]) -> Iterator[None]:
    """Add the seconds of every ``knn_topk`` call made inside the block to ``bucket``.

    Models import ``knn_topk`` by name, so every loaded ``graphrec`` module holding the
    function is patched for the duration of the block.
    """
    import graphrec.graph.knn as knn

    original = knn.knn_topk
    timed_topk = timed(original, bucket)
    patched = [m for name, m in list(sys.modules.items()) if name.startswith("graphrec") and getattr(m, "knn_topk", None) is original]
    for m in patched:
        m.knn_topk = timed_topk
    try:
        yield
    finally:
        for m in patched:
            m.knn_topk = original


#: per-user test metrics stored beside each record (paired significance tests, the paper's columns)
PER_USER_METRICS = ("recall@20", "ndcg@20", "recall@50", "ndcg@50")


def per_user_path(record_path: Path) -> Path:
    """``runs/<id>.json`` -> ``runs/<id>.users.npz`` (users and their per-user test metrics)."""
    return record_path.with_name(record_path.stem + ".users.npz")


def save_per_user(path: Path, users, values: dict[str, Any]) -> None:
    """Write ``users`` (U,) and ``{metric: (U,)}`` as an uncompressed ``.npz`` of plain arrays, atomically."""
    import io

    import numpy as np

    from graphrec.data.interactions import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, users=np.asarray(users, dtype=np.int64), **{k: np.asarray(v, dtype=np.float64) for k, v in values.items()})
    atomic_write_bytes(path, buf.getvalue())


def load_per_user(path: Path) -> tuple[Any, dict[str, Any]] | None:
    """``(users, {metric: values})`` of a ``.users.npz`` (``allow_pickle=False``), or ``None`` if absent/unreadable."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError):
        return None
    users = data.pop("users", None)
    return None if users is None else (users, data)


def end_with_parent() -> None:
    """Make this process receive SIGTERM when its parent dies, and exit 143 on SIGTERM.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGTERM)``; elsewhere (or if that fails) a daemon thread
    polls ``os.getppid()`` every second and signals this process when the parent changes.
    """
    import signal
    import threading

    def on_term(signum, frame):  # noqa: ARG001
        print(f"bench worker: interrupted by signal {signum}; no record written", flush=True)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    # the runner names itself, so a parent that died before this line is noticed too
    parent = int(os.environ.get("GRAPHREC_BENCH_PARENT") or os.getppid())
    ok = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            ok = libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) == 0  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            ok = False
    if ok and os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    if not ok:
        threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def run_spec(
    spec: dict[str, Any],
    progress_path: Path | None = None,
    per_user_file: Path | None = None,
    resume_path: Path | None = None,
    callbacks: tuple = (),
) -> dict[str, Any]:
    """Train ``spec``'s model, evaluate it (and its generated features for ``retrieval``) and measure.

    ``resume_path`` (``<out>/logs/<id>.resume.pt``): keep the run's resume state there after every epoch,
    and continue from it when it holds this run's state (:mod:`graphrec.bench.resume`); the caller deletes
    it once the record is written. ``callbacks``: extra trainer callbacks (tests).
    """
    import torch

    from graphrec.bench import resume as bench_resume
    from graphrec.config import resolve_config
    from graphrec.data.dataset import load_dataset
    from graphrec.data.interactions import atomic_write_json
    from graphrec.errors import GraphrecError
    from graphrec.models.base import graphs_from_state
    from graphrec.models.build import build_model
    from graphrec.registry import MODELS, import_plugins, load_builtin
    from graphrec.train.interrupt import critical
    from graphrec.train.loggers import LineLogger
    from graphrec.train.resume import restore_trainer
    from graphrec.train.seed import resolve_threads
    from graphrec.train.trainer import BATCH_LINE_SECONDS, Callback, Trainer

    load_builtin()
    import_plugins(tuple(spec.get("plugins") or ()))
    cls = MODELS.get(spec["model"])
    config = resolve_config(spec["model"], cls.default_config, spec.get("config_files") or (), spec.get("overrides") or {})
    torch.set_num_threads(resolve_threads(int(config.get("threads") or 0)))  # config key threads (bench --threads)

    t0 = time.perf_counter()
    dataset = load_dataset(config)
    load_s = time.perf_counter() - t0

    # a saved state of this very run (same spec, data, graphrec version) is continued; any other is set aside
    saved, discarded = bench_resume.load_state(resume_path, spec, dataset) if resume_path is not None else (None, None)
    prior: dict[str, Any] = (saved or {}).get("bench") or {}
    curve: list[dict[str, Any]] = list(prior.get("curve") or [])
    eval_s: list[float] = [float(x) for x in prior.get("eval_seconds") or []]
    refine_s: list[float] = [float(x) for x in prior.get("refine_seconds") or []]
    resumed_from: list[int] = [int(x) for x in prior.get("resumed_from_epoch") or []]
    resumed_batch: list[int] = [int(x) for x in prior.get("resumed_from_batch") or []]
    resumed_batch += [0] * (len(resumed_from) - len(resumed_batch))  # states of before mid-epoch resumes
    knn_s: list[float] = []
    ident = bench_resume.identity(spec)

    def start_over(why: str) -> None:
        nonlocal discarded, prior
        print(f"bench worker: starting over at epoch 0: {why}", flush=True)
        discarded, prior = why, {}
        for bucket in (curve, eval_s, refine_s, resumed_from, resumed_batch):
            bucket.clear()
        if resume_path is not None:
            resume_path.unlink(missing_ok=True)

    if discarded:
        start_over(discarded)

    def prior_peak(key: str, now: float | None) -> float | None:
        before = prior.get(key)
        return now if before is None else (float(before) if now is None else max(float(before), now))

    class Progress(Callback):
        def on_epoch_end(self, trainer, epoch, logs) -> None:
            if progress_path is not None:
                atomic_write_json(progress_path, {"epoch": epoch + 1, "epochs": int(config["epochs"]), "loss": logs.get("loss")})

        def on_evaluate(self, trainer, epoch, result) -> None:
            point = {"epoch": epoch + 1, **{k: round(float(v), 6) for k, v in result.metrics.items() if k.split("@")[0] in ("recall", "ndcg")}}
            curve.append(point)

    class SaveResume(Callback):
        """After every epoch and mid-epoch when the trainer says so: the run's resume state
        (:mod:`graphrec.bench.resume`), atomically, signals held back."""

        def on_mid_epoch(self, trainer, epoch, batch) -> None:
            self.on_epoch_logged(trainer, epoch, {}, False, False)

        def on_epoch_logged(self, trainer, epoch, record, evaluated, improved) -> None:
            gpu = torch.cuda.max_memory_allocated(trainer.device) / 2**20 if trainer.device.type == "cuda" else None
            bench = {"identity": ident, "curve": curve, "eval_seconds": eval_s, "refine_seconds": refine_s,
                     "resumed_from_epoch": resumed_from, "resumed_from_batch": resumed_batch,
                     "peak_rss_mb": prior_peak("peak_rss_mb", peak_rss_mb()), "peak_gpu_mb": prior_peak("peak_gpu_mb", gpu)}
            with critical():
                try:
                    bench_resume.save_state(resume_path, trainer, bench)
                except OSError as exc:  # disk full, folder removed: one line, not a traceback
                    raise GraphrecError(f"cannot write the resume state '{resume_path}': {exc.strerror or exc}") from None

    def build(to_load: bool = False) -> tuple[Trainer, float]:
        """Model and trainer, timed and instrumented (again, from the seed, when a saved state does not load).
        ``to_load``: the saved state is loaded next, so the model may leave its graphs to it (graphs_from_state)."""
        knn_s.clear()
        t0 = time.perf_counter()
        with timed_knn(knn_s), graphs_from_state() if to_load else nullcontext():
            model = build_model(dataset, config)
        build_s = time.perf_counter() - t0
        if callable(getattr(model, "refine", None)):
            model.refine = timed(model.refine, refine_s)

        # logs/<id>.log: the stable plain lines of graphrec.train.loggers (parse_line reads them back)
        cbs = [Progress(), LineLogger(lambda line: print(line, flush=True), batch_every_seconds=BATCH_LINE_SECONDS)]
        if resume_path is not None:
            cbs.append(SaveResume())
        cbs += [*_interrupt_hook(), *callbacks]
        trainer = Trainer(model, dataset, config, callbacks=cbs, progress=False)
        trainer.evaluate = timed(trainer.evaluate, eval_s)
        if per_user_file is not None:  # the test evaluation's ranking pass also gives each user's values
            original_ranking = trainer.evaluator.evaluate

            def ranking_with_users(scorer, split="valid", users=None, per_user=()):
                return original_ranking(scorer, split, users, per_user or (per_user_names(trainer) if split == "test" else ()))

            trainer.evaluator.evaluate = ranking_with_users
        return trainer, build_s

    def per_user_names(trainer) -> tuple[str, ...]:
        return tuple(m for m in PER_USER_METRICS if int(m.split("@")[1]) in trainer.evaluator.topk)

    trainer, build_s = build(to_load=saved is not None)
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)
    print(f"bench worker: {spec['id']} (pid {os.getpid()}) on {trainer.device}, {torch.get_num_threads()} thread(s), "
          f"{dataset.n_users} users x {dataset.n_items} items", flush=True)
    if saved is not None:
        try:
            restore_trainer(trainer, saved, resume_path)
        except GraphrecError as exc:  # a state that passed the checks but does not fit the model built now
            start_over(f"the saved state does not load ({exc})")
            trainer, build_s = build()
        else:
            done = trainer.loop.next_epoch
            at = trainer.resume_at
            resumed_from.append(done)
            resumed_batch.append(at.batch if at is not None else 0)
            mid = f", batch {at.batch} of {at.n_batches} of epoch {done + 1}" if at is not None else ""
            print(f"bench worker: resumed at epoch {done} of {int(config['epochs'])}{mid} (best epoch {trainer.loop.best_epoch}) "
                  f"from {resume_path.name}; resume {len(resumed_from)} of this run", flush=True)
            if progress_path is not None:
                last = trainer.loop.history[-1] if trainer.loop.history else {}
                atomic_write_json(progress_path, {"epoch": done, "epochs": int(config["epochs"]), "loss": last.get("loss")})
    del saved  # the state's tensors are in the trainer now
    result = trainer.fit()
    test_per_user = None
    if per_user_file is not None:
        if result.test is not None and result.test.users is not None:
            users, values = result.test.users, result.test.per_user
        else:  # no test evaluation in fit: rank the test split here
            trainer.model.eval()
            with torch.no_grad():
                users, values = trainer.evaluator.per_user(trainer.model.scorer(), "test", per_user_names(trainer))
        save_per_user(per_user_file, users, values)
        test_per_user = {"file": per_user_file.name, "users": int(len(users)), "metrics": sorted(values)}
    if result.test is not None:
        print("test: " + ", ".join(f"{k} {v:.4f}" for k, v in result.test.metrics.items() if k.split("@")[0] in ("recall", "ndcg")), flush=True)

    retrieval, retrieval_s, retrieval_note = None, None, None
    if spec.get("retrieval"):
        if hasattr(trainer.model, "generated_features"):
            from graphrec.eval.retrieval import evaluate_retrieval

            t0 = time.perf_counter()
            trainer.model.eval()
            retrieval = evaluate_retrieval(trainer.model.generated_features(), dataset)
            retrieval_s = time.perf_counter() - t0
            if not retrieval:
                retrieval_note = "no row: no item misses a modality, or the feature files hold no true rows for masked items"
        else:
            retrieval_note = f"model '{spec['model']}' does not generate missing modalities"

    epoch_s = [float(h["seconds"]) for h in result.history]
    test = result.test
    return {
        "id": spec["id"],
        "model": spec["model"],
        "variant": spec["variant"],
        "protocol": spec["protocol"],
        "seed": int(config["seed"]),
        "spec": spec,
        "config": config,
        "dataset": dataset.summary(),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "valid": result.best_valid.metrics if result.best_valid else None,
        "test": test.metrics if test else None,
        "test_users": test.n_users if test else None,
        "test_groups": test.groups if test else {},
        "test_group_users": test.group_users if test else {},
        "test_per_user": test_per_user,
        "valid_curve": curve,
        "history": result.history,
        "epochs_cap": int(config["epochs"]),
        "hit_epoch_cap": (not result.stopped_early) and result.epochs_run >= int(config["epochs"]),
        "device": str(trainer.device),
        "threads": torch.get_num_threads(),
        "retrieval": retrieval,
        "retrieval_note": retrieval_note,
        "seconds_retrieval": retrieval_s,
        "seconds_total": result.seconds,  # training + evaluation seconds of every process, up to each one's last saved epoch
        "resumed_from_epoch": resumed_from,  # epochs done when each resume continued the run ([] = never interrupted)
        "resumed_from_batch": resumed_batch,  # batches of the next epoch done then (0 = resumed at an epoch start)
        "resumes": len(resumed_from),
        "resume_discarded": discarded,  # why a saved state was not continued (None = there was none, or it was)
        "epoch_seconds": epoch_s,
        "seconds_per_epoch": statistics.mean(epoch_s[1:] or epoch_s) if epoch_s else None,
        "n_evaluations": len(eval_s),
        "seconds_per_eval": statistics.mean(eval_s) if eval_s else None,
        "n_refinements": len(refine_s),
        "seconds_per_refinement": statistics.mean(refine_s) if refine_s else None,
        "seconds_knn_build": sum(knn_s) if knn_s else None,
        "seconds_load": load_s,
        "seconds_build": build_s,
        "peak_rss_mb": prior_peak("peak_rss_mb", peak_rss_mb()),
        "peak_gpu_mb": prior_peak("peak_gpu_mb", torch.cuda.max_memory_allocated(trainer.device) / 2**20 if trainer.device.type == "cuda" else None),
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "dgl": __import__("dgl").__version__,
            "torch_threads": torch.get_num_threads(),
            "device": str(trainer.device),
            "gpu": torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else None,
        },
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _interrupt_hook() -> list:
    """``GRAPHREC_BENCH_INTERRUPT_AFTER_EPOCH=k`` (tests): SIGTERM this worker once epoch ``k`` is saved,
    as a killed benchmark would be. A resumed run past epoch ``k`` is not interrupted again.
    ``GRAPHREC_BENCH_INTERRUPT_AFTER_BATCH=k:b``: the same once the mid-epoch state after batch ``b`` of
    epoch ``k`` (1-based) is saved (``resume_every_batches`` must write one there)."""
    value = os.environ.get("GRAPHREC_BENCH_INTERRUPT_AFTER_EPOCH")
    batch_value = os.environ.get("GRAPHREC_BENCH_INTERRUPT_AFTER_BATCH")
    if not value and not batch_value:
        return []
    import signal

    from graphrec.train.trainer import Callback

    at_batch = tuple(int(x) for x in batch_value.split(":")) if batch_value else None

    class InterruptAfter(Callback):
        def on_epoch_logged(self, trainer, epoch, record, evaluated, improved) -> None:
            if value and epoch + 1 == int(value):
                os.kill(os.getpid(), signal.SIGTERM)

        def on_mid_epoch(self, trainer, epoch, batch) -> None:
            if at_batch is not None and (epoch + 1, batch) == at_batch:
                os.kill(os.getpid(), signal.SIGTERM)

    return [InterruptAfter()]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (2, 3, 4):
        print("usage: python -m graphrec.bench.worker SPEC.json RECORD.json [PROGRESS.json [RESUME.pt]]", file=sys.stderr)
        return 2
    end_with_parent()
    spec = json.loads(Path(args[0]).read_text())
    progress = Path(args[2]) if len(args) >= 3 else None
    resume = Path(args[3]) if len(args) == 4 else None
    from graphrec.data.interactions import atomic_write_json
    from graphrec.errors import GraphrecError
    from graphrec.train.interrupt import handle_signals

    record_path = Path(args[1])
    try:
        with handle_signals():  # SIGINT/SIGTERM -> Interrupted, held back while the resume state is written
            record = run_spec(spec, progress, per_user_path(record_path), resume)
    except GraphrecError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM (bench stopped, its parent gone)
        signum = int(getattr(exc, "signum", 2))
        kept = f"; {resume.name} keeps the epochs done" if resume is not None and resume.is_file() else ""
        print(f"bench worker: interrupted by signal {signum}; no record written{kept}", flush=True)
        return 128 + signum
    atomic_write_json(record_path, record)  # a record means a finished run
    if resume is not None:  # last: a kill before this leaves a state beside a record, which the runner deletes
        resume.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
