"""Paired significance tests over users between two models of one ``graphrec bench`` table.

Each run stores its users' test metrics (``runs/<id>.users.npz``, :mod:`graphrec.bench.worker`).
For a row and the first ``--model``'s row of the same variant, every user's value is averaged
over the seeds both rows ran (seeds paired by number), then the users present in both are
compared with a paired t-test (``scipy.stats.ttest_rel``) and a Wilcoxon signed-rank test
(``scipy.stats.wilcoxon``, zero differences dropped) — the tests of the DGMRec authors' release
and of the CI2MG paper. Users are the unit: the tests say whether the difference holds across
users for these seeds, not across seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: significance level of the marks in results.md
ALPHA = 0.05


def user_means(records: list[dict[str, Any]], runs_dir: Path, metric: str, seeds: set[int] | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """``(users, mean value over the records' seeds)`` of ``metric``, or ``None`` if a per-user file is missing."""
    from graphrec.bench.worker import load_per_user

    total: dict[int, float] = {}
    count: dict[int, int] = {}
    used = 0
    for r in records:
        if seeds is not None and r["seed"] not in seeds:
            continue
        info = r.get("test_per_user") or {}
        loaded = load_per_user(runs_dir / info["file"]) if info.get("file") else None
        if loaded is None or metric not in loaded[1]:
            return None
        users, vals = loaded[0], loaded[1][metric]
        for u, v in zip(users.tolist(), vals.tolist()):
            total[u] = total.get(u, 0.0) + v
            count[u] = count.get(u, 0) + 1
        used += 1
    if not used:
        return None
    users = np.array(sorted(total), dtype=np.int64)
    return users, np.array([total[u] / count[u] for u in users.tolist()])


def paired_tests(base: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Paired t-test and Wilcoxon signed-rank test of ``other`` against ``base`` over their common users.

    Returns ``{"users", "mean_diff", "t_p", "wilcoxon_p"}`` (p-values two-sided; 1.0 when every
    difference is zero).
    """
    from scipy import stats

    bu, bv = base
    ou, ov = other
    common, bi, oi = np.intersect1d(bu, ou, return_indices=True)
    a, b = bv[bi], ov[oi]
    diff = b - a
    out: dict[str, Any] = {"users": int(len(common)), "mean_diff": float(diff.mean()) if len(diff) else 0.0}
    if len(common) < 2 or not np.any(diff != 0):
        out.update(t_p=1.0, wilcoxon_p=1.0)
        return out
    # a constant non-zero difference: the t statistic is infinite
    out["t_p"] = float(stats.ttest_rel(b, a).pvalue) if np.std(diff) > 1e-12 * max(1.0, float(np.abs(diff).max())) else 0.0
    out["wilcoxon_p"] = float(stats.wilcoxon(b, a, zero_method="wilcox").pvalue)
    return out


def significance_rows(
    rows: list[dict[str, Any]], by_key: dict[tuple[str, str], list[dict[str, Any]]], first: str, runs_dir: Path,
    metrics: tuple[str, ...] = ("recall@20", "ndcg@20"),
) -> list[dict[str, Any]]:
    """One entry per (row, metric) of a model other than ``first``: the tests against ``first``'s row.

    The base row is ``first``'s row of the same variant (or its first row). Rows without per-user
    files (records of an older graphrec) get ``note`` instead of p-values.
    """
    base_rows = {row["variant"]: row for row in rows if row["model"] == first}
    fallback = next((row for row in rows if row["model"] == first), None)
    out = []
    for row in rows:
        if row["model"] == first:
            continue
        base = base_rows.get(row["variant"], fallback)
        if base is None:
            continue
        seeds = set(row["seeds"]) & set(base["seeds"])
        for metric in metrics:
            entry: dict[str, Any] = {"model": row["model"], "variant": row["variant"], "base": f"{base['model']} / {base['variant']}",
                                     "metric": metric, "seeds": sorted(seeds)}
            if not seeds:
                entry["note"] = "no seed in common"
                out.append(entry)
                continue
            a = user_means(by_key[(base["model"], base["variant"])], runs_dir, metric, seeds)
            b = user_means(by_key[(row["model"], row["variant"])], runs_dir, metric, seeds)
            if a is None or b is None:
                entry["note"] = "no per-user metrics in a record (made by an older graphrec)"
            else:
                entry.update(paired_tests(a, b))
            out.append(entry)
    return out


def mark(entry: dict[str, Any] | None) -> str:
    """``*`` when both tests are significant at :data:`ALPHA`, ``(*)`` when one is, else empty."""
    if not entry or "t_p" not in entry:
        return ""
    n = (entry["t_p"] < ALPHA) + (entry["wilcoxon_p"] < ALPHA)
    return "*" if n == 2 else ("(*)" if n == 1 else "")
