"""``results.md``, ``results.json`` and the plots of a ``graphrec bench`` output folder.

Rows are (model, variant); every number is the mean ± sample standard deviation over the
seeds that finished (the value alone for one seed). Cost columns are means over seeds, peak
RSS the largest run. The ratio columns divide a row's seconds per epoch and peak RSS by those
of the first ``--model`` with the same variant (or its first variant when it has no such one).
Plots need matplotlib (``pip install 'graphrec[bench]'``); without it they are skipped.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from graphrec.bench.resume import describe_position
from graphrec.bench.runner import PROTOCOLS, SETTING_LABELS, SWEEPS, Plan
from graphrec.bench.significance import ALPHA, mark, significance_rows

PLOTS_SKIPPED = "plots skipped: matplotlib is not installed (pip install 'graphrec[bench]')"


def _mean(vals: list[float]) -> float | None:
    vals = [v for v in vals if v is not None]
    return statistics.mean(vals) if vals else None


def fmt(vals: list[float | None], digits: int = 4) -> str:
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def _num(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def metric_columns(records: list[dict[str, Any]]) -> list[str]:
    """recall/ndcg at 20 and 50 (the papers' columns) where computed, else at the largest K."""
    keys = set()
    for r in records:
        keys |= set(r.get("test") or {})
    cols = [k for k in ("recall@20", "recall@50", "ndcg@20", "ndcg@50") if k in keys]
    if cols:
        return cols
    ks = sorted({int(k.split("@")[1]) for k in keys if "@" in k})
    return [f"recall@{ks[-1]}", f"ndcg@{ks[-1]}"] if ks else []


def main_metric(records: list[dict[str, Any]]) -> str:
    cols = metric_columns(records)
    return "recall@20" if "recall@20" in cols else (cols[-1] if cols else "recall@20")


def summarise(p: Plan, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, variant) in plan order, with the seeds' values and the cost means."""
    order = list(dict.fromkeys((s["model"], s["variant"]) for s in p.specs))
    by_key: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        by_key.setdefault((r["model"], r["variant"]), []).append(r)
    metrics = metric_columns(records)
    rows = []
    for key in order:
        rs = sorted(by_key.get(key, []), key=lambda r: r["seed"])
        if not rs:
            continue
        rows.append({
            "model": key[0],
            "variant": key[1],
            "seeds": [r["seed"] for r in rs],
            "metrics": {m: [r["test"].get(m) for r in rs] for m in metrics},
            "best_epoch": [r["best_epoch"] for r in rs],
            "epochs_run": [r["epochs_run"] for r in rs],
            "settings": settings_text(rs),
            "hit_cap": [r["seed"] for r in rs if hit_cap(r)],
            "seconds_per_epoch": _mean([r["seconds_per_epoch"] for r in rs]),
            "seconds_per_eval": _mean([r["seconds_per_eval"] for r in rs]),
            "seconds_per_refinement": _mean([r["seconds_per_refinement"] for r in rs]),
            "seconds_knn_build": _mean([r["seconds_knn_build"] for r in rs]),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
            "peak_gpu_mb": max((r["peak_gpu_mb"] for r in rs if r.get("peak_gpu_mb") is not None), default=None),
            "groups": _groups(rs),
            "retrieval": _retrieval(rs),
            "retrieval_notes": sorted({r["retrieval_note"] for r in rs if r.get("retrieval_note")}),
        })
    first = p.models[0]
    sig = significance_rows(rows, by_key, first, p.out / "runs")
    for row in rows:
        row["significance"] = {e["metric"]: e for e in sig if e["model"] == row["model"] and e["variant"] == row["variant"]}
    base = {row["variant"]: row for row in rows if row["model"] == first}
    fallback = next((row for row in rows if row["model"] == first), None)
    for row in rows:
        b = base.get(row["variant"], fallback)
        ok = b is not None and b["seconds_per_epoch"] and row["seconds_per_epoch"] is not None
        row["epoch_ratio"] = row["seconds_per_epoch"] / b["seconds_per_epoch"] if ok else None
        row["rss_ratio"] = row["peak_rss_mb"] / b["peak_rss_mb"] if b is not None and b["peak_rss_mb"] else None
        row["ratio_base"] = None if b is None else f"{b['model']}" + ("" if b["variant"] == row["variant"] else f" ({b['variant']})")
    return rows


def hit_cap(r: dict[str, Any]) -> bool:
    """True when a run trained up to its epoch cap instead of stopping early (it may not have converged)."""
    if "hit_epoch_cap" in r:
        return bool(r["hit_epoch_cap"])
    cap = (r.get("config") or {}).get("epochs")
    return not r.get("stopped_early") and cap is not None and r.get("epochs_run", 0) >= int(cap)


def _short(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return "[" + ",".join(_short(x) for x in v) + "]"
    return str(v)


def settings_text(rs: list[dict[str, Any]]) -> str:
    """The trainer settings the records used (from their resolved configs), e.g. ``lr 0.001, batch 4096, ...``.

    Keys whose value differs between the seeds list every value.
    """
    parts = []
    for key, label in SETTING_LABELS.items():
        vals = list(dict.fromkeys(_short((r.get("config") or {}).get(key)) for r in rs if key in (r.get("config") or {})))
        if vals:
            parts.append(f"{label} {'/'.join(vals)}")
    return ", ".join(parts)


def _groups(rs: list[dict]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in rs:
        for g, vals in (r.get("test_groups") or {}).items():
            d = out.setdefault(g, {"values": {}, "users": []})
            for m, v in vals.items():
                d["values"].setdefault(m, []).append(v)
            d["users"].append((r.get("test_group_users") or {}).get(g))
    return out


def _retrieval(rs: list[dict]) -> list[dict[str, Any]]:
    out: dict[tuple, dict[str, Any]] = {}
    for r in rs:
        for row in r.get("retrieval") or []:
            k = (row["modality"], row["group"], row["method"])
            d = out.setdefault(k, {"modality": k[0], "group": k[1], "method": k[2], "items": row["items"], "hit@10": [], "hit@20": []})
            for h in ("hit@10", "hit@20"):
                d[h].append(row.get(h))
    return list(out.values())


def _group_order(name: str) -> tuple:
    if name.startswith("missing="):
        return (0, int(name.split("=")[1]), name)
    return (1, 0, name)


def _machine(records: list[dict]) -> str:
    env = records[0].get("environment", {}) if records else {}
    threads = sorted({r.get("environment", {}).get("torch_threads") for r in records} - {None})
    devices = sorted({r.get("environment", {}).get("device") for r in records} - {None})
    gpu = env.get("gpu")
    return (
        f"{env.get('platform', '?')}, {env.get('cpu_count', '?')} CPU cores, torch threads {'/'.join(map(str, threads)) or '?'}, "
        f"device {'/'.join(devices) or '?'}{f' ({gpu})' if gpu else ''}; python {env.get('python', '?')}, "
        f"torch {env.get('torch', '?')}, DGL {env.get('dgl', '?')}"
    )


def _dataset_line(p: Plan, records: list[dict]) -> str:
    d = records[0]["dataset"] if records else {}
    where = f"`{p.data_dir}`" if p.data_dir else "the embedded synthetic dataset"

    def n(key: str) -> str:
        v = d.get(key)
        return f"{v:,}" if isinstance(v, int) else "?"

    line = (
        f"{d.get('name', '?')} ({where}): {n('users')} users × {n('items')} items, "
        f"{n('train')} train / {n('valid')} valid / {n('test')} test rows, "
        f"modalities {', '.join(f'{m} ({dim})' for m, dim in (d.get('modalities') or {}).items()) or 'none'}"
    )
    if p.protocol not in SWEEPS and d.get("missing"):
        line += "; items missing: " + ", ".join(f"{m} {c:,}" for m, c in d["missing"].items())
    if d.get("new_items"):
        line += f"; new items {d['new_items']:,}"
    return line


def research_only(p: Plan) -> bool:
    if not p.data_dir:
        return False
    d = Path(p.data_dir)
    return (d / "PREPARED.json").is_file() or "shared/data" in str(d.resolve())


def markdown(p: Plan, records: list[dict[str, Any]], rows: list[dict[str, Any]], failed: list[str], plots: list[str], plot_note: str | None) -> str:
    metrics = metric_columns(records)
    seeds = sorted({r["seed"] for r in records})
    caps = sorted({int(r["config"]["epochs"]) for r in records if (r.get("config") or {}).get("epochs") is not None})
    lines = [
        f"# Benchmark: protocol `{p.protocol}`",
        "",
        f"* protocol: {PROTOCOLS[p.protocol]}",
        f"* dataset: {_dataset_line(p, records)}",
        f"* seeds: {', '.join(map(str, seeds)) or '–'} (mean ± sample std over seeds; one value = one seed)",
        f"* epochs: at most {'/'.join(map(str, caps)) if caps else '?'} as the records ran (early stopping on validation; test at the best validation epoch)",
        f"* machine: {_machine(records)}",
        f"* generated {time.strftime('%Y-%m-%d %H:%M')} by `graphrec bench`; one JSON record per run in `runs/`",
    ]
    if research_only(p):
        lines.append("* **data licence: research use only** (prepared from ../shared/data; see PREPARED.json); do not redistribute")
    lines.append("")

    if p.protocol == "breakdown":
        lines += _groups_md(rows, records) + [""]
    if p.protocol == "retrieval":
        lines += _retrieval_md(rows) + [""]
    cost = ["best epoch", "epochs run", "s/epoch", "s/eval", "s/refinement", "kNN build s", "peak RSS MB"]
    first = p.models[0]
    header = ["model", "variant", "runs", *[f"test {m}" for m in metrics], *cost, f"s/epoch vs {first}", f"RSS vs {first}"]
    lines += ["## Test metrics and cost", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            row["model"], row["variant"], str(len(row["seeds"])),
            *[fmt(row["metrics"][m]) + mark(row["significance"].get(m)) for m in metrics],
            fmt([float(x) for x in row["best_epoch"]], 1),
            fmt([float(x) for x in row["epochs_run"]], 1) + (f" ⚠ cap ({len(row['hit_cap'])})" if row["hit_cap"] else ""),
            _num(row["seconds_per_epoch"]), _num(row["seconds_per_eval"]), _num(row["seconds_per_refinement"]),
            _num(row["seconds_knn_build"]), f"{row['peak_rss_mb']:.0f}" + (f" (GPU {row['peak_gpu_mb']:.0f})" if row["peak_gpu_mb"] else ""),
            "–" if row["epoch_ratio"] is None else f"{row['epoch_ratio']:.2f}×",
            "–" if row["rss_ratio"] is None else f"{row['rss_ratio']:.2f}×",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"`*`: the row differs from {first} in both paired tests over users (t-test and Wilcoxon signed-rank, "
        f"p < {ALPHA}; `(*)`: in one of them; see *Significance*). ⚠ cap (n): n seeds trained up to their epoch cap "
        "instead of stopping early, so they may not have converged.",
        "",
        "s/epoch: training time per epoch (model hooks such as DGMRec's CLUB steps, generation and "
        "refinement included, evaluation excluded), mean over the epochs after the first; s/eval: one "
        "full-ranking evaluation (validation or test); s/refinement: one DGMRec graph refinement; kNN "
        "build s: top-k searches while building the model; peak RSS: the run's process (each run has its own).",
        "",
    ]
    fallback = sorted({f"{row['model']} / {row['variant']} vs {row['ratio_base']}" for row in rows
                       if row["ratio_base"] and row["ratio_base"] != row["model"] and row["ratio_base"] != first})
    if fallback:
        lines += [f"Ratios are taken against {first} with the same variant where it has one, otherwise: "
                  + "; ".join(fallback) + ".", ""]
    lines += _settings_md(rows) + [""]
    lines += _significance_md(rows, first) + [""]
    if p.protocol != "breakdown" and any(row["groups"] for row in rows):
        lines += _groups_md(rows, records) + [""]
    notes = list(p.notes)
    for row in rows:
        for n in row["retrieval_notes"]:
            notes.append(f"{row['model']} / {row['variant']}: retrieval: {n}")
    if failed:
        notes.append(f"failed runs (see logs/): {', '.join(failed)}")
    resumed = [f"{r['id']} (after epoch {', '.join(_resume_points(r))})" for r in records if r.get("resumed_from_epoch")]
    if resumed:
        notes.append("runs interrupted and continued from their resume state (same metrics as an uninterrupted run for the "
                     "same threads; per-epoch seconds from each process, load and build seconds from the last, peak RSS the "
                     f"largest): {', '.join(resumed)}")
    if plot_note:
        notes.append(plot_note)
    if notes:
        lines += ["## Notes", ""] + [f"* {n}" for n in notes] + [""]
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(f).stem}]({f})" for f in plots] + [""]
    return "\n".join(lines)


def _settings_md(rows: list[dict]) -> list[str]:
    lines = [
        "## Trainer settings of each row",
        "",
        "Read from the records' resolved configs (what the runs used; cap = maximum epochs, patience = "
        "evaluations without improvement before stopping).",
        "",
        "| model | variant | settings |",
        "|---|---|---|",
    ]
    return lines + [f"| {row['model']} | {row['variant']} | {row['settings'] or '–'} |" for row in rows]


def _significance_md(rows: list[dict], first: str) -> list[str]:
    entries = [e for row in rows for e in row["significance"].values()]
    if not entries:
        return []
    lines = [
        f"## Significance against {first}",
        "",
        "Paired over test users (each user's value averaged over the seeds both rows ran): mean difference "
        "(row − base), two-sided p-values of the paired t-test and the Wilcoxon signed-rank test.",
        "",
        "| model | variant | base | metric | seeds | users | mean diff | t-test p | Wilcoxon p |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        if "t_p" not in e:
            lines.append(f"| {e['model']} | {e['variant']} | {e['base']} | {e['metric']} | {len(e['seeds'])} | – | – | {e.get('note', '–')} | – |")
            continue
        lines.append(
            f"| {e['model']} | {e['variant']} | {e['base']} | {e['metric']} | {len(e['seeds'])} | {e['users']} | "
            f"{e['mean_diff']:+.4f} | {e['t_p']:.2g} | {e['wilcoxon_p']:.2g} |"
        )
    return lines


def _groups_md(rows: list[dict], records: list[dict]) -> list[str]:
    metric = main_metric(records)
    groups = sorted({g for row in rows for g in row["groups"]}, key=_group_order)
    if not groups:
        return ["## By item group", "", "No item groups: no item misses a modality and there are no new items.", ""]
    lines = [
        f"## Test {metric} by item group",
        "",
        "Each user's positives restricted to the group's items (users without one are skipped); ranking over all items.",
        "",
        "| model | variant | " + " | ".join(groups) + " |",
        "|" + "---|" * (len(groups) + 2),
    ]
    for row in rows:
        cells = []
        for g in groups:
            d = row["groups"].get(g)
            if d is None:
                cells.append("–")
                continue
            users = [u for u in d["users"] if u is not None]
            cells.append(fmt(d["values"].get(metric, [])) + (f" ({users[0]} users)" if users else ""))
        lines.append(f"| {row['model']} | {row['variant']} | " + " | ".join(cells) + " |")
    return lines


def _retrieval_md(rows: list[dict]) -> list[str]:
    lines = [
        "## Cross-modal retrieval (DGMRec Table 3 protocol)",
        "",
        "Hit@K: the item itself among the K items whose true feature is most cosine-similar to its generated "
        "(or nearest-neighbour mean) feature of a hidden modality.",
        "",
        "| model | variant | modality | group | method | items | hit@10 | hit@20 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    n = len(lines)
    for row in rows:
        for r in row["retrieval"]:
            lines.append(
                f"| {row['model']} | {row['variant']} | {r['modality']} | {r['group']} | {r['method']} | {r['items']} | "
                f"{fmt(r['hit@10'])} | {fmt(r['hit@20'])} |"
            )
    if len(lines) == n:
        lines.append("| – | – | – | – | no retrieval rows (see notes) | – | – | – |")
    return lines


def plot(p: Plan, records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> tuple[list[str], str | None]:
    """Write PNG plots into ``p.out``; returns (file names, note when skipped)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], PLOTS_SKIPPED
    metric = main_metric(records)
    files: list[str] = []
    labels = [f"{r['model']}\n{r['variant']}" if r["variant"] not in (p.protocol, "default") else r["model"] for r in rows]

    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(rows)), 4))
    if p.protocol in SWEEPS:
        for model in p.models:
            pts = sorted((p.sweep[r["variant"]], r) for r in rows if r["model"] == model and r["variant"] in p.sweep)
            if not pts:
                continue
            xs = [x for x, _ in pts]
            ys = [statistics.mean(_vals(r, metric)) for _, r in pts]
            es = [statistics.stdev(_vals(r, metric)) if len(_vals(r, metric)) > 1 else 0.0 for _, r in pts]
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=model)
        ax.set_xlabel("missing ratio")
        ax.legend()
        fig.set_size_inches(6, 4)
    else:
        ys = [statistics.mean(_vals(r, metric)) if _vals(r, metric) else 0.0 for r in rows]
        es = [statistics.stdev(_vals(r, metric)) if len(_vals(r, metric)) > 1 else 0.0 for r in rows]
        ax.bar(range(len(rows)), ys, yerr=es, capsize=3, color="tab:blue")
        ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"{p.protocol}: test {metric} (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(p.out / "plot_metrics.png", dpi=120)
    plt.close(fig)
    files.append("plot_metrics.png")

    fig, axes = plt.subplots(1, 2, figsize=(max(8, 2.0 * len(rows)), 4))
    for ax, key, title in ((axes[0], "seconds_per_epoch", "seconds per epoch"), (axes[1], "peak_rss_mb", "peak RSS (MiB)")):
        ax.bar(range(len(rows)), [r[key] or 0.0 for r in rows], color="tab:orange" if key == "peak_rss_mb" else "tab:green")
        ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(p.out / "plot_cost.png", dpi=120)
    plt.close(fig)
    files.append("plot_cost.png")

    groups = sorted({g for r in rows for g in r["groups"]}, key=_group_order)
    if groups:
        fig, ax = plt.subplots(figsize=(max(6, 1.5 * len(groups) * max(1, len(rows)) / 2), 4))
        width = 0.8 / max(1, len(rows))
        for k, r in enumerate(rows):
            ys = [statistics.mean(r["groups"][g]["values"].get(metric, [0.0])) if g in r["groups"] else 0.0 for g in groups]
            ax.bar([i + k * width for i in range(len(groups))], ys, width, label=labels[k].replace("\n", " / "))
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))], groups)
        ax.set_ylabel(f"test {metric}")
        ax.set_title(f"{p.protocol}: test {metric} by item group")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(p.out / "plot_groups.png", dpi=120)
        plt.close(fig)
        files.append("plot_groups.png")
    return files, None


def _vals(row: dict, metric: str) -> list[float]:
    return [v for v in row["metrics"].get(metric, []) if v is not None]


def write_report(p: Plan, records: list[dict[str, Any]], failed: list[str], make_plots: bool = True) -> tuple[Path, list[str], str | None]:
    """Write ``results.md``, ``results.json`` and the plots; returns (results.md, plots, plot note)."""
    from graphrec.data.interactions import atomic_write_bytes

    rows = summarise(p, records)
    plots, note = plot(p, records, rows) if (make_plots and rows) else ([], None)
    md = markdown(p, records, rows, failed, plots, note)
    out = p.out / "results.md"
    atomic_write_bytes(out, (md + "\n").encode())
    summary = {
        "protocol": p.protocol,
        "models": p.models,
        "seeds": p.seeds,
        "data_dir": p.data_dir,
        "notes": p.notes,
        "failed": failed,
        "runs": [r["id"] for r in records],
        "rows": [{k: v for k, v in row.items() if k not in ("retrieval_notes",)} for row in rows],
    }
    atomic_write_bytes(p.out / "results.json", (json.dumps(summary, indent=2) + "\n").encode())
    return out, plots, note


def _resume_points(record: dict[str, Any]) -> list[str]:
    """``["3", "4 + 2 batch(es)"]``: where each resume of a run continued (epochs done, batches of the next)."""
    epochs = list(record.get("resumed_from_epoch") or [])
    batches = list(record.get("resumed_from_batch") or []) + [0] * len(epochs)
    return [describe_position(e, b) for e, b in zip(epochs, batches)]
