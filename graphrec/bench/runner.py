"""``graphrec bench``: run the papers' protocols for several models and seeds, resumably.

:func:`plan` turns (models, protocol, data, settings, seeds) into run specs; :func:`run_all`
runs each spec in its own Python process (``python -m graphrec.bench.worker``), so the peak
RSS of a record is that run's alone, and skips every run whose record
``<out>/runs/<model>__<variant>__seed<k>.json`` exists (resume). A run in progress keeps a resume
state ``<out>/logs/<id>.resume.pt`` (:mod:`graphrec.bench.resume`), so a run interrupted mid-way
continues from its last finished epoch when the same command runs again. :mod:`graphrec.bench.report`
then writes ``results.md``, ``results.json`` and the plots.

Protocols (``--protocol``):

================  =============================================================================
``missing``       the dataset's mask (``--set missing_ratio=0.6``; synthetic: ``synth_missing``)
``new-items``     the new-item setting (``new_items=true``); groups new / old
``ratio-sweep``   nested masks at 0/20/40/60/80 % missing (``generate_missing``, one seed)
``ci2mg-sweep``   the same at 50/60/70/80/90 % (CI2MG Fig. 3 missing rates)
``breakdown``     as ``missing``; the report leads with the groups missing=0/1/2 (DGMRec Fig. 3)
``ablation``      DGMRec Table 4 / CI2MG Table 3 variants; other models run once as baselines
``retrieval``     train, then DGMRec Table 3 retrieval (Hit@10/20) on the generated features
``natural``       the natural mask ``missing_items_natural.npy`` (e.g. ML-100K, ML-1M)
================  =============================================================================

Sweeps on a data folder write the masks into ``<out>/work/<protocol>/`` next to symbolic
links to the folder's ``.inter`` and feature files (nothing is copied); on the synthetic
set they set ``synth_missing=<ratio>``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from graphrec.bench.ablations import ABLATIONS
from graphrec.bench.resume import remove_state, remove_temporaries, state_path
from graphrec.errors import GraphrecError

PROTOCOLS: dict[str, str] = {
    "missing": "the dataset's missing-modality mask (e.g. --set missing_ratio=0.6)",
    "new-items": "new-item setting (new_items=true): test groups new / old items",
    "ratio-sweep": "nested masks with 0/20/40/60/80 % of items missing a modality",
    "ci2mg-sweep": "nested masks with 50/60/70/80/90 % of items missing a modality",
    "breakdown": "test metrics by number of missing modalities (DGMRec Fig. 3)",
    "ablation": "DGMRec Table 4 and CI2MG Table 3 variants (other models: baseline)",
    "retrieval": "cross-modal retrieval of generated features (DGMRec Table 3)",
    "natural": "natural missingness (missing_items_natural.npy)",
}

SWEEPS: dict[str, list[float]] = {
    "ratio-sweep": [0.0, 0.2, 0.4, 0.6, 0.8],
    "ci2mg-sweep": [0.5, 0.6, 0.7, 0.8, 0.9],
}


#: trainer settings that ``bench`` gives every model alike (``--trainer shared``, the default) unless a
#: preset or ``--set`` names them: a model's own defaults of these keys (DGMRec lr 3e-3 / batch 1,024,
#: CI2MG 300 epochs / patience 50, ...) would make a defaults-only comparison unfair.
SHARED_TRAINER_KEYS = (
    "epochs", "train_batch_size", "learning_rate", "learning_rate_scheduler", "weight_decay", "eval_step",
    "stopping_step", "stopping_min_epochs", "valid_metric", "eval_mask_valid_in_test", "embedding_size",
)
#: settings that change how fast a run goes, not its results: a record made with others is kept
RESOURCE_KEYS = ("threads", "resume_every_minutes", "resume_every_batches")
#: the trainer settings printed beside each row of results.md (short names)
SETTING_LABELS = {
    "learning_rate": "lr", "train_batch_size": "batch", "epochs": "cap", "stopping_step": "patience",
    "learning_rate_scheduler": "sched", "reg_weight": "reg", "eval_mask_valid_in_test": "mask valid",
}


def slug(text: str) -> str:
    """File-name form of a variant name: ``w/o generation`` -> ``w-o-generation``."""
    s = re.sub(r"[^a-z0-9.=+]+", "-", text.lower()).strip("-")
    return s.replace("=", "-").replace("+", "plus") or "default"


def run_id(model: str, variant: str, seed: int) -> str:
    return f"{slug(model)}__{slug(variant)}__seed{seed}"


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in re.split(r"[,\s]+", text.strip()) if s]
    except ValueError:
        raise GraphrecError(f"--seeds expects comma-separated integers like 2024,2025,2026, got '{text}'") from None
    if not seeds:
        raise GraphrecError("--seeds needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise GraphrecError(f"--seeds repeats a seed: '{text}'")
    return seeds


def parse_presets(items: tuple[str, ...] | list[str], models: list[str]) -> dict[str, list[str]]:
    """``["dgmrec=configs/dgmrec/tiktok.yaml", ...]`` -> ``{model: [files]}`` (repeatable per model)."""
    out: dict[str, list[str]] = {}
    for item in items:
        model, sep, path = item.partition("=")
        if not sep or not model.strip() or not path.strip():
            raise GraphrecError(f"--preset expects MODEL=PATH.yaml, got '{item}'")
        model = model.strip()
        if model not in models:
            raise GraphrecError(f"--preset '{item}' names model '{model}', which is not among --model {', '.join(models)}")
        if not Path(path.strip()).is_file():
            raise GraphrecError(f"--preset '{item}': config file '{path.strip()}' does not exist")
        out.setdefault(model, []).append(path.strip())
    return out


@dataclass
class Plan:
    """The runs of one ``graphrec bench`` invocation and what the report needs to know."""

    protocol: str
    models: list[str]
    seeds: list[int]
    specs: list[dict[str, Any]]
    data_dir: str | None
    out: Path
    notes: list[str] = field(default_factory=list)
    #: variant name -> missing ratio (sweeps), for the x axis of the plots
    sweep: dict[str, float] = field(default_factory=dict)


def _variants(protocol: str, model: str, data_dir: str | None, work: Path | None) -> tuple[list[tuple[str, dict]], list[str]]:
    """``[(variant, overrides)]`` of ``model`` under ``protocol`` and notes on what cannot run."""
    notes: list[str] = []
    if protocol in SWEEPS:
        out = []
        for r in SWEEPS[protocol]:
            ov = {"synth_missing": r} if data_dir is None else {"data_dir": str(work), "missing_ratio": r, "mask_file": None}
            out.append((f"missing={r:g}", ov))
        return out, notes
    if protocol == "ablation":
        variants, impossible = ABLATIONS.get(model, ({}, {}))
        if not variants:
            return [("default", {})], notes
        for name, why in impossible.items():
            notes.append(f"{model} ablation variant '{name}': {why}")
        return [(name, dict(ov)) for name, ov in variants.items()], notes
    if protocol == "new-items":
        return [("new-items", {"new_items": True})], notes
    if protocol == "natural":
        return [("natural", {"missing_ratio": "natural", "mask_file": None})], notes
    return [(protocol, {})], notes


def _prepare_sweep_dir(protocol: str, data_dir: Path, work: Path, sets: dict[str, Any], mask_seed: int) -> list[str]:
    """Write the nested masks of ``protocol`` into ``work`` beside links to ``data_dir``'s files."""
    from graphrec.data.dataset import find_inter_file
    from graphrec.data.features import discover_modalities
    from graphrec.data.interactions import read_inter
    from graphrec.data.masks import generate_missing, mask_file_name, save_mask_file

    if not data_dir.is_dir():
        raise GraphrecError(f"data directory '{data_dir}' does not exist")
    _, inter_path = find_inter_file(data_dir, sets.get("dataset"))
    mods = list(sets.get("modalities") or discover_modalities(data_dir))
    if not mods:
        raise GraphrecError(f"no <modality>_feat.npy in '{data_dir}'; the {protocol} protocol masks modalities")
    work.mkdir(parents=True, exist_ok=True)
    linked = []
    for src in sorted(data_dir.iterdir()):
        if src.suffix == ".inter" or src.name.endswith("_feat.npy") or src.name == "new_items.npy":
            dest = work / src.name
            target = src.resolve()
            if dest.is_symlink() and dest.resolve() == target:
                continue
            if dest.exists() or dest.is_symlink():
                dest.unlink()
            dest.symlink_to(target)
            linked.append(src.name)
    n_items = read_inter(inter_path).n_items
    for r in SWEEPS[protocol]:
        save_mask_file(work / mask_file_name(r), generate_missing(n_items, mods, r, seed=mask_seed))
    return mods


def plan(
    models: list[str],
    protocol: str,
    out: Path,
    data_dir: str | None = None,
    sets: dict[str, Any] | None = None,
    presets: dict[str, list[str]] | None = None,
    seeds: list[int] | None = None,
    epochs: int | None = None,
    variants: list[str] | None = None,
    plugins: tuple[str, ...] = (),
    threads: int | None = None,
    mask_seed: int = 1225,
    write: bool = True,
    trainer: str = "shared",
) -> Plan:
    """The run specs of one invocation; every config is resolved here, so bad keys fail before any run.

    ``write=False`` (dry run, ``--report-only``) does not create the sweep work folder. ``trainer="shared"`` gives every
    model the trainer defaults (:data:`graphrec.config.TRAIN_DEFAULTS`) for :data:`SHARED_TRAINER_KEYS`
    that no preset or ``--set`` names; ``"model"`` keeps each model's own defaults of them.
    Each spec holds its resolved ``config`` (what the run will use).
    ``threads`` (``--threads``) sets the config key ``threads`` of every run (default 1, one torch
    thread per run; 0 = the CPUs the worker may use); ``--set threads=N`` is the same setting, and
    naming both with different values is an error.
    """
    from graphrec.config import TRAIN_DEFAULTS, load_yaml, resolve_config
    from graphrec.registry import MODELS, import_plugins, load_builtin

    if protocol not in PROTOCOLS:
        raise GraphrecError(f"unknown protocol '{protocol}'; choose one of {', '.join(PROTOCOLS)}")
    if not models:
        raise GraphrecError("name at least one model with --model")
    if len(set(models)) != len(models):
        raise GraphrecError(f"--model repeats a model: {', '.join(models)}")
    load_builtin()
    import_plugins(plugins)
    for m in models:
        MODELS.get(m)
    sets = dict(sets or {})
    presets = presets or {}
    seeds = seeds or [2024]
    if trainer not in ("shared", "model"):
        raise GraphrecError(f"--trainer must be 'shared' or 'model', got '{trainer}'")
    if "seed" in sets or "epochs" in sets or "data_dir" in sets:
        raise GraphrecError("use --seeds, --epochs and --data-dir rather than --set seed/epochs/data_dir")
    if protocol == "natural":
        if data_dir is None:
            raise GraphrecError("--protocol natural needs --data-dir with a missing_items_natural.npy (e.g. a prepared ml100k)")
        if not (Path(data_dir) / "missing_items_natural.npy").is_file():
            raise GraphrecError(f"--protocol natural: '{Path(data_dir) / 'missing_items_natural.npy'}' does not exist")
    work = out / "work" / protocol if protocol in SWEEPS and data_dir is not None else None
    notes: list[str] = []
    if work is not None:
        if write:
            mods = _prepare_sweep_dir(protocol, Path(data_dir), work, sets, mask_seed)
        elif not Path(data_dir).is_dir():
            raise GraphrecError(f"data directory '{data_dir}' does not exist")
        else:  # a dry run or --report-only: the same note, nothing written
            from graphrec.data.features import discover_modalities

            mods = list(sets.get("modalities") or discover_modalities(Path(data_dir)))
        notes.append(
            f"masks: nested, generated with graphrec.data.masks.generate_missing (seed {mask_seed}, modalities "
            f"{', '.join(mods)}) in {work} (symbolic links to the data files; the dataset's own masks are not used)"
        )
    elif protocol in SWEEPS:
        notes.append("masks: the synthetic set's nested protocol (synth_missing=<ratio>, seed 1225 + synth_seed)")

    specs: list[dict[str, Any]] = []
    sweep: dict[str, float] = {}
    known_variants: set[str] = set()
    base = {**sets, **({"data_dir": str(data_dir)} if data_dir is not None else {})}
    if epochs is not None:
        base["epochs"] = int(epochs)
    if "threads" in sets:
        if threads is not None and str(sets["threads"]) != str(threads):
            raise GraphrecError(f"--threads {threads} and --set threads={sets['threads']} disagree; name the threads once")
    else:
        base["threads"] = 1 if threads is None else int(threads)
    for seed in seeds:
        for model in models:
            model_variants, model_notes = _variants(protocol, model, data_dir, work)
            if seed == seeds[0]:
                notes.extend(model_notes)
            for variant, ov in model_variants:
                known_variants.add(variant)
                if variants and variant not in variants:
                    continue
                if protocol in SWEEPS:
                    sweep[variant] = float(ov.get("missing_ratio", ov.get("synth_missing")))
                overrides = {**base, **ov, "seed": seed}
                cls = MODELS.get(model)
                cfg_files = list(presets.get(model, []))
                shared: dict[str, Any] = {}
                if trainer == "shared":
                    named = set(overrides) | {k for f in cfg_files for k in load_yaml(f)}
                    shared = {k: TRAIN_DEFAULTS[k] for k in SHARED_TRAINER_KEYS
                              if k in cls.default_config and k not in named and cls.default_config[k] != TRAIN_DEFAULTS[k]}
                    if shared and seed == seeds[0] and variant == model_variants[0][0]:
                        notes.append(f"{model}: shared trainer settings instead of its own defaults: "
                                     + ", ".join(f"{k} {cls.default_config[k]!r} -> {v!r}" for k, v in shared.items())
                                     + " (--trainer model keeps them)")
                    overrides = {**shared, **overrides}
                config = resolve_config(model, cls.default_config, cfg_files, overrides)  # bad keys fail before any run
                specs.append({
                    "id": run_id(model, variant, seed),
                    "model": model,
                    "variant": variant,
                    "protocol": protocol,
                    "seed": seed,
                    "config_files": cfg_files,
                    "overrides": overrides,
                    "plugins": list(plugins),
                    "threads": int(config.get("threads") or 0),  # 0 = the CPUs the worker may use
                    "retrieval": protocol == "retrieval",
                    "trainer": trainer,
                    "shared_trainer_keys": sorted(shared),
                    "config": config,
                })
    if variants:
        unknown = [v for v in variants if v not in known_variants]
        if unknown:
            raise GraphrecError(
                f"--variant {', '.join(repr(v) for v in unknown)} is not a variant of protocol '{protocol}' for these models; "
                f"variants: {', '.join(sorted(known_variants))}"
            )
    if not specs:
        raise GraphrecError("no run to do: --variant left out every run")
    ids = [s["id"] for s in specs]
    if len(set(ids)) != len(ids):
        raise GraphrecError("two runs map to the same record file; rename the variants")
    return Plan(protocol, list(models), list(seeds), specs, None if data_dir is None else str(data_dir), out, notes, sweep)


def _defaults(model: str) -> dict[str, Any]:
    from graphrec.config import resolve_config
    from graphrec.registry import MODELS

    return resolve_config(model, MODELS.get(model).default_config, [], {})


def changed_settings(old: dict[str, Any], spec: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (old, new)}`` where the record ``old`` ran with other settings than ``spec`` would.

    Compares the resolved configs (``old["config"]`` with ``spec["config"]``); a key that the old
    record lacks (added to graphrec later) counts only if its new value is not the default.
    :data:`RESOURCE_KEYS` (``threads``, how often resume states are written) do not count: they change the
    timings, not what is measured.
    """
    before, after = old.get("config") or {}, spec.get("config") or {}
    if not before:  # a record without its config: compare what the spec asked for
        before = {**(old.get("spec") or {}).get("overrides", {})}
        after = dict(spec.get("overrides") or {})
    defaults: dict[str, Any] | None = None
    out: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(before) | set(after)):
        if key in RESOURCE_KEYS:
            continue
        a, b = before.get(key, "(absent)"), after.get(key, "(absent)")
        if json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str):
            continue
        if key not in before:
            defaults = defaults if defaults is not None else _defaults(spec["model"])
            if json.dumps(defaults.get(key), default=str) == json.dumps(b, default=str):
                continue
        out[key] = (a, b)
    return out


def existing_changes(p: Plan) -> dict[str, dict[str, tuple[Any, Any]]]:
    """``{run id: changed settings}`` of the plan's runs whose record in ``p.out/runs`` used other settings."""
    out = {}
    for spec in p.specs:
        path = p.out / "runs" / f"{spec['id']}.json"
        if not path.is_file():
            continue
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        diff = changed_settings(old, spec)
        if diff:
            out[spec["id"]] = diff
    return out


def changes_message(out: Path, changes: dict[str, dict[str, tuple[Any, Any]]]) -> str:
    """One line naming the keys that differ (with old -> new values) in the records of ``changes``."""
    keys: dict[str, set[str]] = {}
    for diff in changes.values():
        for k, (a, b) in diff.items():
            keys.setdefault(k, set()).add(f"{json.dumps(a, default=str)} -> {json.dumps(b, default=str)}")
    what = "; ".join(f"{k}: {', '.join(sorted(v)[:3])}" for k, v in keys.items())
    return (
        f"--out '{out}' holds {len(changes)} record(s) made with other settings ({what}); "
        "use another --out, or --rerun-changed to run them again (their old records move to runs/replaced/)"
    )


def set_aside(p: Plan, ids: list[str]) -> Path:
    """Move the records (and per-user files) of ``ids`` into ``runs/replaced/<time>/``; returns that folder."""
    dest = p.out / "runs" / "replaced" / time.strftime("%Y%m%d-%H%M%S")
    dest.mkdir(parents=True, exist_ok=True)
    for run in ids:
        for name in (f"{run}.json", f"{run}.users.npz"):
            src = p.out / "runs" / name
            if src.exists():
                os.replace(src, dest / name)
    return dest


def _child_env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    pkg_parent = str(Path(__file__).resolve().parents[2])  # importable from a checkout, too
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"  # the log holds each line as it is printed
    env["GRAPHREC_BENCH_PARENT"] = str(os.getpid())  # the worker ends when this process does
    return env


def stop_worker(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the worker, wait up to ``grace`` seconds, then SIGKILL; it writes no record when stopped."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_all(
    p: Plan,
    console,
    progress: bool = True,
    on_done: Callable[[dict[str, Any], str], None] | None = None,
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Run every spec of ``p`` that has no record yet; returns (records, skipped ids, failed ids).

    A run in progress keeps its resume state in ``logs/<id>.resume.pt`` (:mod:`graphrec.bench.resume`);
    a run started again with one continues from its last saved epoch and appends to ``logs/<id>.log``.
    SIGINT/SIGTERM raise :class:`graphrec.train.interrupt.Interrupted` (the running worker is stopped
    first and writes no record; its resume state stays).
    """
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from graphrec.train.interrupt import handle_signals

    runs_dir, logs_dir = p.out / "runs", p.out / "logs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    logs_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    skipped: list[str] = []
    failed: list[str] = []
    bar = Progress(
        TextColumn("[bold blue]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=not progress,
    )
    with bar, handle_signals():  # SIGINT/SIGTERM -> Interrupted: the worker is stopped below
        total = bar.add_task("runs", total=len(p.specs), info="")
        epochs = bar.add_task("epochs", total=None, info="", visible=False)
        for spec in p.specs:
            record_path = runs_dir / f"{spec['id']}.json"
            if record_path.is_file():
                try:
                    old = json.loads(record_path.read_text())
                except (OSError, json.JSONDecodeError):
                    old = None
                if old is not None:
                    diff = changed_settings(old, spec)
                    if diff:  # the CLI refuses these before running (or sets them aside with --rerun-changed)
                        raise GraphrecError(changes_message(p.out, {spec["id"]: diff}))
                    records.append(old)
                    skipped.append(spec["id"])
                    remove_state(logs_dir, spec["id"])  # a worker killed between its record and this deletion
                    bar.update(total, advance=1)
                    continue
            spec_path = logs_dir / f"{spec['id']}.spec.json"
            progress_path = logs_dir / f"{spec['id']}.progress.json"
            log_path = logs_dir / f"{spec['id']}.log"
            resume_path = state_path(logs_dir, spec["id"])
            remove_temporaries(logs_dir, spec["id"])  # left by a hard kill in the middle of a write
            spec_path.write_text(json.dumps(spec, indent=2, default=str) + "\n")
            progress_path.unlink(missing_ok=True)
            bar.update(total, info=spec["id"])
            bar.reset(epochs, total=(spec["overrides"].get("epochs") or None), visible=True, description="epochs", info="")
            # a run with a saved state continues it (the worker checks that it is this run's): its log goes on
            with open(log_path, "a" if resume_path.is_file() else "w") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "graphrec.bench.worker", str(spec_path), str(record_path), str(progress_path),
                     str(resume_path)],
                    stdout=log, stderr=subprocess.STDOUT, env=_child_env(spec.get("threads")),
                )
                try:
                    while proc.poll() is None:
                        time.sleep(0.25)
                        _show_progress(bar, epochs, progress_path)
                except BaseException:
                    stop_worker(proc)
                    progress_path.unlink(missing_ok=True)
                    raise
            if proc.returncode == 0 and record_path.is_file():
                rec = json.loads(record_path.read_text())
                records.append(rec)
                progress_path.unlink(missing_ok=True)
                if on_done:
                    on_done(rec, "done")
            else:
                failed.append(spec["id"])
                tail = log_path.read_text().strip().splitlines()[-1:] if log_path.is_file() else []
                console.print(f"[red]run {spec['id']} failed[/] (exit {proc.returncode}): {escape(tail[0] if tail else '')} — log: {escape(str(log_path))}")
            bar.update(total, advance=1)
        bar.update(epochs, visible=False)
    return records, skipped, failed


def _show_progress(bar, task, path: Path) -> None:
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return
    loss = info.get("loss")
    bar.update(task, completed=info.get("epoch", 0), total=info.get("epochs"), info=f"loss {loss:.4f}" if loss is not None else "")
