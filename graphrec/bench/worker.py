"""Train and measure one benchmark run in this process (the child of :mod:`graphrec.bench.runner`).

    python -m graphrec.bench.worker SPEC.json RECORD.json [PROGRESS.json]

``SPEC.json`` holds the run (model, variant, protocol, seed, config files, overrides,
plugins, threads, retrieval). The record is written atomically to ``RECORD.json`` only when
the run finished, so an existing record means a finished run (the runner's resume rule).
``PROGRESS.json`` is rewritten after every epoch (epoch, epochs, validation score) for the
runner's progress bar.

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
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


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


@contextmanager
def timed_knn(bucket: list[float]) -> Iterator[None]:
    """Add the seconds of every ``knn_topk`` call made inside the block to ``bucket``.

    Models import ``knn_topk`` by name, so every loaded ``graphrec`` module holding the
    function is patched for the duration of the block.
    """
    import graphrec.graph.knn as knn

    original = knn.knn_topk

    def timed(*args, **kwargs):
        t = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            bucket.append(time.perf_counter() - t)

    patched = [m for name, m in list(sys.modules.items()) if name.startswith("graphrec") and getattr(m, "knn_topk", None) is original]
    for m in patched:
        m.knn_topk = timed
    try:
        yield
    finally:
        for m in patched:
            m.knn_topk = original


def run_spec(spec: dict[str, Any], progress_path: Path | None = None) -> dict[str, Any]:
    """Train ``spec``'s model, evaluate it (and its generated features for ``retrieval``) and measure."""
    import torch

    from graphrec.config import resolve_config
    from graphrec.data.dataset import load_dataset
    from graphrec.data.interactions import atomic_write_json
    from graphrec.models.build import build_model
    from graphrec.registry import MODELS, import_plugins, load_builtin
    from graphrec.train.trainer import Callback, Trainer

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    load_builtin()
    import_plugins(tuple(spec.get("plugins") or ()))
    cls = MODELS.get(spec["model"])
    config = resolve_config(spec["model"], cls.default_config, spec.get("config_files") or (), spec.get("overrides") or {})

    t0 = time.perf_counter()
    dataset = load_dataset(config)
    load_s = time.perf_counter() - t0
    knn_s: list[float] = []
    t0 = time.perf_counter()
    with timed_knn(knn_s):
        model = build_model(dataset, config)
    build_s = time.perf_counter() - t0

    refine_s: list[float] = []
    if callable(getattr(model, "refine", None)):
        original_refine = model.refine

        def timed_refine(*args, **kwargs):
            t = time.perf_counter()
            try:
                return original_refine(*args, **kwargs)
            finally:
                refine_s.append(time.perf_counter() - t)

        model.refine = timed_refine

    class Progress(Callback):
        def on_epoch_end(self, trainer, epoch, logs) -> None:
            if progress_path is not None:
                atomic_write_json(progress_path, {"epoch": epoch + 1, "epochs": int(config["epochs"]), "loss": logs.get("loss")})

    trainer = Trainer(model, dataset, config, callbacks=[Progress()], progress=False)
    eval_s: list[float] = []
    original_eval = trainer.evaluate

    def timed_eval(split):
        t = time.perf_counter()
        try:
            return original_eval(split)
        finally:
            eval_s.append(time.perf_counter() - t)

    trainer.evaluate = timed_eval
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)
    result = trainer.fit()

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
        "retrieval": retrieval,
        "retrieval_note": retrieval_note,
        "seconds_retrieval": retrieval_s,
        "seconds_total": result.seconds,
        "epoch_seconds": epoch_s,
        "seconds_per_epoch": statistics.mean(epoch_s[1:] or epoch_s) if epoch_s else None,
        "n_evaluations": len(eval_s),
        "seconds_per_eval": statistics.mean(eval_s) if eval_s else None,
        "n_refinements": len(refine_s),
        "seconds_per_refinement": statistics.mean(refine_s) if refine_s else None,
        "seconds_knn_build": sum(knn_s) if knn_s else None,
        "seconds_load": load_s,
        "seconds_build": build_s,
        "peak_rss_mb": peak_rss_mb(),
        "peak_gpu_mb": torch.cuda.max_memory_allocated(trainer.device) / 2**20 if trainer.device.type == "cuda" else None,
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


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (2, 3):
        print("usage: python -m graphrec.bench.worker SPEC.json RECORD.json [PROGRESS.json]", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    progress = Path(args[2]) if len(args) == 3 else None
    from graphrec.data.interactions import atomic_write_json
    from graphrec.errors import GraphrecError

    try:
        record = run_spec(spec, progress)
    except GraphrecError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    atomic_write_json(Path(args[1]), record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
