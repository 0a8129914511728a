#!/usr/bin/env python
"""Time and memory of one CI2MG optimal-transport step as the number of items N grows.

Usage::

    python benchmarks/bench_ot_scaling.py                                   # N = 500 ... 8000, d = 64
    python benchmarks/bench_ot_scaling.py --sizes 1000 4000 --json bench-out/ot.json

One "plan" is one direction of :meth:`graphrec.models.ci2mg.CI2MG.inter_modal` (with
``ot_batch_items: 0``): the block :class:`graphrec.blocks.sinkhorn.SinkhornTransport`
(squared-distance cost matrix ``N×N`` + ``--iters`` Sinkhorn iterations at ``ε = --eps``)
followed by the barycentric mapping ``T @ Q`` (``O(N²·d)``). "s / batch" is what a CI2MG
batch with 2 modalities runs: one cost matrix shared by the two directions (the second plan
runs on its transpose) and two plans and maps, timed as such (the rest of the batch is not
included).

Features are random and sigmoid-like (``sigmoid(randn)``, seeded), in ``[0, 1]`` as
CI2MG's projected features are roughly. Every size runs in its own subprocess, so its
peak resident memory (``ru_maxrss``) is its own; "RSS before" is the process after
importing torch and creating the features. The plan is timed ``--repeats`` times after
one warm-up; the median is reported. With ``--log-domain`` the log-domain iterations are
forced (the default picks the scaling-vector form when the kernel's spread
``max(-C/ε) - min(-C/ε)`` is at most ``SCALING_MAX_SPREAD`` nats, which it is for these
features; the "path" column says which ran).

Sizes whose time (extrapolated as ``N²`` from the previous size) would exceed
``--max-seconds`` per plan, or whose estimated memory (5 ``N×N`` float32 buffers) would
exceed ``--max-gib``, are skipped and listed as such.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from graphrec.bench.worker import peak_rss_mb, timed_json_child  # noqa: E402


def current_rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    from graphrec.blocks.sinkhorn import SCALING_MAX_SPREAD, SinkhornTransport, squared_cost

    n, d = args.one, args.dim
    gen = torch.Generator().manual_seed(args.seed)
    q_other = torch.sigmoid(torch.randn(n, d, generator=gen))
    q_self = torch.sigmoid(torch.randn(n, d, generator=gen))
    transport = SinkhornTransport(args.eps, args.iters, True if args.log_domain else None)
    rss_before = current_rss_mib()

    cost = squared_cost(q_other, q_self)
    spread = float((cost.max() - cost.min()) / args.eps)
    del cost

    def one_plan() -> float:
        t = time.perf_counter()
        with torch.no_grad():
            plan = transport(q_other, q_self)
            q_hat = plan @ q_self
        elapsed = time.perf_counter() - t
        assert torch.isfinite(q_hat).all()
        del plan, q_hat
        return elapsed

    def one_batch() -> float:
        """What a 2-modality CI2MG batch runs: one cost matrix, a plan per direction (the second on
        its transposed view, as ``CI2MG.inter_modal`` does), two barycentric maps."""
        t = time.perf_counter()
        with torch.no_grad():
            cost = squared_cost(q_other, q_self)
            hat_self = transport.from_cost(cost) @ q_self
            hat_other = transport.from_cost(cost.T) @ q_other
        elapsed = time.perf_counter() - t
        assert torch.isfinite(hat_self).all() and torch.isfinite(hat_other).all()
        del cost, hat_self, hat_other
        return elapsed

    one_plan()  # warm-up
    times = [one_plan() for _ in range(args.repeats)]
    per_plan = statistics.median(times)
    one_batch()
    batch_times = [one_batch() for _ in range(args.repeats)]
    return {
        "n_items": n,
        "dim": d,
        "iters": args.iters,
        "eps": args.eps,
        "kernel_spread_nats": round(spread, 2),
        "path": "log-domain (forced)" if args.log_domain else ("scaling-vector" if spread <= SCALING_MAX_SPREAD else "log-domain"),
        "s_per_plan": per_plan,
        "s_per_plan_all": times,
        "s_per_batch_2_modalities": statistics.median(batch_times),
        "s_per_batch_2_modalities_all": batch_times,
        "rss_before_mib": round(rss_before, 1),
        "peak_rss_mib": round(peak_rss_mb(), 1),
        "n2_float32_mib": n * n * 4 / 2**20,
        "threads": args.threads,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 4000, 8000], help="numbers of items N")
    p.add_argument("--dim", type=int, default=64, help="feature dimension d")
    p.add_argument("--iters", type=int, default=10, help="Sinkhorn iterations (ot_iterations)")
    p.add_argument("--eps", type=float, default=5.0, help="entropic regularisation ε (ot_epsilon)")
    p.add_argument("--repeats", type=int, default=3, help="timed plans per size (after one warm-up)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per size")
    p.add_argument("--max-seconds", type=float, default=60.0, help="skip a size whose extrapolated time per plan exceeds this")
    p.add_argument("--max-gib", type=float, default=8.0, help="skip a size whose estimated memory exceeds this")
    p.add_argument("--log-domain", action="store_true",
                   help="force the log-domain Sinkhorn (what CI2MG runs when the kernel spread exceeds SCALING_MAX_SPREAD nats)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=Path("bench-out/bench_ot_scaling.json"), help="output JSON")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size in this process
    args = p.parse_args(argv)
    if args.one is not None:
        print(json.dumps(run_one(args)))
        return 0

    import torch
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    records: list[dict[str, Any]] = []
    last: dict[str, Any] | None = None
    for n in sorted(args.sizes):
        est_gib = 5 * n * n * 4 / 2**30
        est_s = None if last is None else last["s_per_plan"] * (n / last["n_items"]) ** 2 * (1 + args.repeats)
        if est_gib > args.max_gib or (est_s is not None and est_s / (1 + args.repeats) > args.max_seconds):
            why = f"estimated {est_gib:.1f} GiB" if est_gib > args.max_gib else f"extrapolated {est_s / (1 + args.repeats):.0f} s per plan"
            console.print(f"[yellow]N = {n:,} skipped[/]: {why}")
            records.append({"n_items": n, "skipped": why})
            continue
        cmd = [sys.executable, __file__, "--one", str(n), "--dim", str(args.dim), "--iters", str(args.iters),
               "--eps", str(args.eps), "--repeats", str(args.repeats), "--threads", str(args.threads), "--seed", str(args.seed)] + (["--log-domain"] if args.log_domain else [])
        rec = timed_json_child(cmd, args.threads, console, f"N = {n:,}")
        if "error" in rec:
            records.append({"n_items": n, **rec})
            continue
        records.append(rec)
        last = rec

    table = Table(title=f"CI2MG optimal transport (cost + Sinkhorn + T·Q), d = {args.dim}, {args.iters} iterations, "
                        f"ε = {args.eps}, {args.threads} thread(s)" + (", log domain forced" if args.log_domain else ""))
    for col in ("N", "s / plan", "s / batch (2 modalities)", "peak RSS MiB", "RSS before MiB", "N² float32 MiB", "path"):
        table.add_column(col, justify="right")
    for r in records:
        n2 = f"{r['n_items'] ** 2 * 4 / 2**20:,.1f}"
        if "skipped" in r:
            table.add_row(f"{r['n_items']:,}", "skipped", r["skipped"], "", "", n2, "")
        elif "error" in r:
            table.add_row(f"{r['n_items']:,}", "failed", "", "", "", n2, "")
        else:
            table.add_row(f"{r['n_items']:,}", f"{r['s_per_plan']:.3f}", f"{r['s_per_batch_2_modalities']:.3f}",
                          f"{r['peak_rss_mib']:,.0f}", f"{r['rss_before_mib']:,.0f}", n2, r["path"])
    console.print(table)

    meta = {"machine": platform.machine(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "threads": args.threads,
            "dim": args.dim, "iters": args.iters, "eps": args.eps, "repeats": args.repeats, "log_domain_forced": args.log_domain}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "records": records}, indent=2))
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
