#!/usr/bin/env python
"""Time and memory of kNN graph construction and refinement from 10^4 to 10^6 items.

Usage::

    python benchmarks/bench_knn_scaling.py                                # 10^4, 10^5, 10^6 items x 64 dims
    python benchmarks/bench_knn_scaling.py --sizes 10000 100000 --json bench-out/knn.json

Features are synthetic (``torch.randn``, seeded). Every size runs in its own subprocess, so
its peak resident memory (``ru_maxrss``) is its own. Two operations are measured, as DGMRec
runs them (spec 4.3, 4.8):

* **build**: :func:`graphrec.graph.knn.build_knn_graph` -- chunked cosine top-k over all N
  rows, then masking of the missing items (a random ``--refine-fraction`` of them) and
  row-sum normalisation;
* **refine**: :func:`graphrec.graph.refinement.refresh_rows` with ``exact=False`` on those
  missing rows -- their top-k against all N items, then normalisation and row blending.

Both are ``O(rows x N x d)`` in time. When the projected time of a size exceeds
``--full-limit`` seconds (10^6 items: hours on 2 CPU cores) only a sample is timed: the first
``--sample-chunks`` similarity blocks of the build and of the refinement, against all N
columns, with the real code (:func:`knn_topk` with ``rows=``). The full time is then
*projected* as time-per-block x number-of-blocks plus the sparse post-processing, which
is run at full size on a stand-in graph with the same number of entries (k random
neighbours per row) and timed, so the peak RSS covers the full-size sparse matrices too.
Projected values are labelled as such in the table and the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from graphrec.bench.worker import peak_rss_mb, timed_json_child  # noqa: E402


def _random_graph(n: int, k: int, rows, rng):
    """A stand-in raw kNN graph: ``k`` random neighbours (self included) per row of ``rows``, weights in (0, 1]."""
    import numpy as np
    import scipy.sparse as sp

    rows = np.asarray(rows, dtype=np.int64)
    r = np.repeat(rows, k)
    c = rng.integers(0, n, size=len(r))
    c[::k] = rows  # the item itself, as a cosine top-k has it
    v = rng.random(len(r), dtype=np.float32) * 0.9 + 0.1
    v[::k] = 1.0
    a = sp.csr_matrix((v, (r, c)), shape=(n, n))
    a.sum_duplicates()
    return a


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """One size, in this process; returns the record."""
    import numpy as np
    import torch

    from graphrec.graph.knn import blend_rows, block_rows, build_knn_graph, knn_topk, mask_missing, row_sums, sym_normalize
    from graphrec.graph.refinement import refresh_rows

    torch.set_num_threads(args.threads)
    n, d, k = args.one, args.dim, args.k
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(n, d, generator=gen)
    rng = np.random.default_rng(args.seed)
    missing = rng.random(n) < args.refine_fraction
    refresh = np.flatnonzero(missing)
    rss_data = peak_rss_mb()
    step = block_rows(args.chunk_size, n)
    n_blocks, n_refine_blocks = math.ceil(n / step), math.ceil(len(refresh) / step)
    rec: dict[str, Any] = {
        "n_items": n, "dim": d, "k": k, "chunk_size": args.chunk_size, "block_rows": step,
        "build_blocks": n_blocks, "refine_rows": int(len(refresh)), "refine_blocks": n_refine_blocks,
        "setup_s": round(time.perf_counter() - t0, 3), "rss_after_data_mib": round(rss_data, 1),
    }
    # sample: the first blocks of the build and of the refinement (the real knn_topk, all N columns)
    s = min(args.sample_chunks, n_blocks)
    t = time.perf_counter()
    knn_topk(x, k, rows=np.arange(min(s * step, n)), chunk_size=args.chunk_size)
    per_block = (time.perf_counter() - t) / s
    sr = min(args.sample_chunks, n_refine_blocks)
    t = time.perf_counter()
    knn_topk(x, k, rows=refresh[: sr * step], chunk_size=args.chunk_size)
    per_refine_block = (time.perf_counter() - t) / max(sr, 1)
    rec.update(sampled_blocks=s, s_per_block=round(per_block, 4), s_per_refine_block=round(per_refine_block, 4))
    projected = per_block * n_blocks + per_refine_block * n_refine_blocks
    full = projected <= args.full_limit and not args.sample_only
    rec["mode"] = "full" if full else "sampled"
    if full:
        t = time.perf_counter()
        graph, sums = build_knn_graph(x, k, missing=missing, chunk_size=args.chunk_size)
        rec["build_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        refined, _ = refresh_rows(graph, x, refresh, k, args.lam, sums, exact=False, chunk_size=args.chunk_size)
        rec["refine_s"] = round(time.perf_counter() - t, 3)
        rec["graph_nnz"], rec["refined_nnz"] = int(graph.nnz), int(refined.nnz)
    else:
        # sparse post-processing at full size on stand-in graphs with the same number of entries
        raw = _random_graph(n, k, np.arange(n), rng)
        t = time.perf_counter()
        graph = sym_normalize(mask_missing(raw, missing))
        sums = row_sums(raw)
        build_sparse = time.perf_counter() - t
        new_raw = _random_graph(n, k, refresh, rng)
        t = time.perf_counter()
        sums2 = np.array(sums, dtype=np.float64, copy=True)
        sums2[refresh] = row_sums(new_raw)[refresh]
        refined = blend_rows(graph, sym_normalize(new_raw, sums2), refresh, args.lam)
        refine_sparse = time.perf_counter() - t
        rec.update(
            build_sparse_s=round(build_sparse, 3), refine_sparse_s=round(refine_sparse, 3),
            build_s_projected=round(per_block * n_blocks + build_sparse, 1),
            refine_s_projected=round(per_refine_block * n_refine_blocks + refine_sparse, 1),
            graph_nnz=int(graph.nnz), refined_nnz=int(refined.nnz),
        )
    rec["peak_rss_mib"] = round(peak_rss_mb(), 1)
    return rec


def _fmt_s(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 3600:
        return f"{v / 3600:.1f} h"
    if v >= 60:
        return f"{v / 60:.1f} min"
    return f"{v:.2f} s"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="numbers of items")
    p.add_argument("--dim", type=int, default=64, help="feature dimension")
    p.add_argument("--k", type=int, default=10, help="neighbours per row (knn_k)")
    p.add_argument("--chunk-size", type=int, default=2048, help="rows per similarity block (knn_chunk_size; capped at 2^28/N)")
    p.add_argument("--refine-fraction", type=float, default=0.3, help="share of items missing the modality = rows refined")
    p.add_argument("--lam", type=float, default=0.8, help="avg_lambda of the row blend")
    p.add_argument("--sample-chunks", type=int, default=3, help="blocks timed per operation when a size is sampled")
    p.add_argument("--full-limit", type=float, default=180.0, help="measure a size fully only if its projected time is below this (s)")
    p.add_argument("--sample-only", action="store_true", help="sample every size")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=Path("bench-out/bench_knn_scaling.json"), help="output JSON")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size in this process
    args = p.parse_args(argv)
    if args.one is not None:
        print(json.dumps(run_one(args)))
        return 0

    import torch
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    records = []
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--one", str(n), "--dim", str(args.dim), "--k", str(args.k),
               "--chunk-size", str(args.chunk_size), "--refine-fraction", str(args.refine_fraction), "--lam", str(args.lam),
               "--sample-chunks", str(args.sample_chunks), "--full-limit", str(args.full_limit), "--threads", str(args.threads),
               "--seed", str(args.seed)] + (["--sample-only"] if args.sample_only else [])
        rec = timed_json_child(cmd, args.threads, console, f"N = {n:,}")
        if "error" in rec:
            records.append({"n_items": n, **rec})
            continue
        records.append(rec)

    table = Table(title=f"kNN graph construction, d = {args.dim}, k = {args.k}, {args.threads} thread(s), "
                        f"refinement of {args.refine_fraction:.0%} of rows")
    for col in ("items", "mode", "rows/block", "s/block", "build", "refine (exact=False)", "RSS after data", "peak RSS"):
        table.add_column(col, justify="right")
    for r in records:
        if "error" in r:
            table.add_row(f"{r['n_items']:,}", "failed", "", "", "", "", "", "")
            continue
        if r["mode"] == "full":
            build, refine = _fmt_s(r["build_s"]), _fmt_s(r["refine_s"])
        else:
            build = f"{_fmt_s(r['build_s_projected'])} (projected)"
            refine = f"{_fmt_s(r['refine_s_projected'])} (projected)"
        table.add_row(f"{r['n_items']:,}", r["mode"], str(r["block_rows"]), f"{r['s_per_block']:.3f}", build, refine,
                      f"{r['rss_after_data_mib']:,.0f} MiB", f"{r['peak_rss_mib']:,.0f} MiB")
    console.print(table)
    env_info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
                "cpu_count": os.cpu_count(), "threads": args.threads, "processor": platform.processor()}
    payload = {"env": env_info, "args": {k: v for k, v in vars(args).items() if k not in ("one", "json")}, "records": records}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
