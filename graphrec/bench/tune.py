"""``graphrec tune``: grid or random search over config keys, selected on validation only.

A search space is a YAML mapping ``key: [value, ...]`` (config keys of the model). ``grid`` runs
every combination; ``random`` runs ``trials`` combinations drawn without replacement from the
grid (seeded). Every trial is a ``graphrec bench`` run (:mod:`graphrec.bench.runner`: its own
process, a record ``runs/<model>__<trial>__seed<k>.json``, resumable, settings checked), named by
its values, e.g. ``learning_rate-0.001,reg_weight-0.1``.

Selection uses the validation metric (``valid_metric``, averaged over seeds) and nothing else; the
test metrics of the chosen trial are reported once, those of the others are not shown. The
DGMRec authors' code and MMRec instead keep the combination with the best *test* score, which
makes their test numbers optimistic.
"""

from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from graphrec.bench.runner import Plan, plan, run_id
from graphrec.errors import GraphrecError


def read_space(path: Path) -> dict[str, list[Any]]:
    """``{key: [values]}`` from a YAML file; one-line errors for anything else."""
    from graphrec.config import load_yaml

    space = load_yaml(path)
    if not space:
        raise GraphrecError(f"search space '{path}' is empty; give key: [value, ...] per config key")
    for key, values in space.items():
        if not isinstance(values, list) or not values:
            raise GraphrecError(f"search space '{path}': '{key}' must be a non-empty list of values, got {values!r}")
        if key in ("seed", "epochs", "data_dir"):
            raise GraphrecError(f"search space '{path}': '{key}' is not searched; use --seeds, --epochs, --data-dir")
    return {str(k): list(v) for k, v in space.items()}


def combinations(space: dict[str, list[Any]], search: str, trials: int | None, seed: int) -> list[dict[str, Any]]:
    """The trials' overrides: the whole grid, or ``trials`` grid points drawn without replacement."""
    keys = list(space)
    grid = [dict(zip(keys, vals)) for vals in itertools.product(*(space[k] for k in keys))]
    if search == "grid":
        return grid
    if search != "random":
        raise GraphrecError(f"--search must be grid or random, got '{search}'")
    n = min(int(trials or 10), len(grid))
    pick = np.random.default_rng(seed).choice(len(grid), size=n, replace=False)
    return [grid[i] for i in sorted(pick.tolist())]


def trial_name(combo: dict[str, Any]) -> str:
    return ",".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in combo.items())


def tune_plan(model: str, combos: list[dict[str, Any]], out: Path, **kwargs: Any) -> Plan:
    """One :class:`Plan` whose variants are the trials (every config resolved before any run)."""
    sets = dict(kwargs.pop("sets", None) or {})
    clash = sorted({k for c in combos for k in c} & set(sets))
    if clash:
        raise GraphrecError(f"--set {', '.join(clash)} is also in the search space; set it in one place")
    specs: list[dict[str, Any]] = []
    base: Plan | None = None
    for combo in combos:
        p = plan([model], "missing", out, sets={**sets, **combo}, **kwargs)
        name = trial_name(combo)
        for s in p.specs:
            s["variant"] = name
            s["id"] = run_id(model, name, s["seed"])
            s["trial"] = combo
        specs.extend(p.specs)
        base = base or p
    assert base is not None
    ids = [s["id"] for s in specs]
    if len(set(ids)) != len(ids):
        raise GraphrecError("two trials map to the same record file; make the values of the search space distinct")
    return Plan("missing", [model], base.seeds, specs, base.data_dir, out, base.notes)


def select(p: Plan, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The trials ranked by mean validation metric (best first) and the chosen one's test metrics."""
    metric = str(records[0]["config"].get("valid_metric", "recall@20")).lower() if records else "recall@20"
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_trial.setdefault(r["variant"], []).append(r)
    rows = []
    for spec in p.specs:
        rs = by_trial.get(spec["variant"])
        if not rs or any(row["trial"] == spec["variant"] for row in rows):
            continue
        vals = [float((r.get("valid") or {}).get(metric, float("nan"))) for r in rs]
        rows.append({
            "trial": spec["variant"], "overrides": spec["trial"], "seeds": sorted(r["seed"] for r in rs),
            "valid": statistics.mean(vals), "valid_std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "best_epoch": [r["best_epoch"] for r in rs], "hit_cap": any(r.get("hit_epoch_cap") for r in rs),
        })
    rows.sort(key=lambda row: -row["valid"])
    chosen = rows[0] if rows else None
    test: dict[str, float] = {}
    if chosen:
        rs = by_trial[chosen["trial"]]
        for k in sorted({k for r in rs for k in (r.get("test") or {})}):
            vals = [r["test"][k] for r in rs if k in (r.get("test") or {})]
            test[k] = statistics.mean(vals)
    return {"metric": metric, "trials": rows, "chosen": chosen, "test": test}


def write_tune_report(p: Plan, model: str, result: dict[str, Any], failed: list[str]) -> Path:
    """``tune.md`` and ``tune.json`` in ``p.out``."""
    from graphrec.data.interactions import atomic_write_bytes, atomic_write_json

    metric = result["metric"]
    lines = [
        f"# Tuning {model} on validation {metric}",
        "",
        f"* data: `{p.data_dir or 'embedded synthetic dataset'}`; seeds {', '.join(map(str, p.seeds))}; {len(result['trials'])} trial(s) finished",
        "* the choice uses the validation metric only; the test metrics below are those of the chosen trial, "
        "reported once (the other trials' test metrics are not looked at)",
        "",
        f"| rank | trial | valid {metric} | best epoch | note |",
        "|---|---|---|---|---|",
    ]
    for i, row in enumerate(result["trials"], 1):
        lines.append(f"| {i} | `{row['trial']}` | {row['valid']:.4f} ± {row['valid_std']:.4f} | "
                     f"{'/'.join(map(str, row['best_epoch']))} | {'⚠ hit the epoch cap' if row['hit_cap'] else ''} |")
    if result["chosen"]:
        lines += ["", f"## Chosen: `{result['chosen']['trial']}`", "", "| test metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in result["test"].items() if k.split("@")[0] in ("recall", "ndcg")]
    if failed:
        lines += ["", f"Failed trials (see logs/): {', '.join(failed)}"]
    md = p.out / "tune.md"
    atomic_write_bytes(md, ("\n".join(lines) + "\n").encode())
    atomic_write_json(p.out / "tune.json", {"model": model, "failed": failed, **result})
    return md
