#!/usr/bin/env python
"""Approximate vs exact kNN item graphs: recall@k, time and peak memory from 10^4 to 10^6 items.

Usage::

    python benchmarks/bench_knn_ann.py --sizes 10000 100000 --methods exact faiss-hnsw faiss-ivf nn-descent
    python benchmarks/bench_knn_ann.py --sizes 1000000 --methods faiss-hnsw --threads 2

**Features are real-like**: the TikTok visual features (``--features``, default
``../shared/data/tiktok-mmssl/image_feat.npy``: 6,710 x 128, non-negative). A size up to 6,710
takes that many real rows; a larger size keeps all real rows and adds synthetic ones, each a
random point on the segment between a real row and one of its 10 most cosine-similar real rows,
plus Gaussian noise of 0.05 x the per-dimension standard deviation (so the new points lie on
the real data's manifold and have neighbours at realistic distances, not 150 copies of a point).

For every size a child process makes the features (saved under ``--work``) and the exact
reference: the exact top-k of ``--recall-rows`` random rows (the real ``knn_topk`` with
``rows=``), timed; the exact build of all N rows is measured in full up to ``--exact-limit``
items and above that **projected** from this sample (time per row x N), and labelled so.
Then every method runs in its own child (its own peak RSS, ``ru_maxrss``, read before the
recall is computed):

* **build**: ``knn_topk`` of all N rows with ``knn_method: ann`` and the backend's default
  settings (``graphrec.graph.ann.KNN_SEARCH_DEFAULTS``): index build + query + exact weights;
* **refine search**: ``knn_topk`` of 30 % of the rows (``--refine-fraction``, DGMRec's refresh of
  the items missing a modality): a new index of all items (features change between refreshes)
  queried with those rows only;
* **recall@k**: of the build's neighbour lists on the sampled rows against the exact ones (a
  found item as similar as the exact k-th neighbour counts as found: ties).

Timings run with ``--threads`` torch/faiss threads (``OMP_NUM_THREADS``). Records are merged
into ``--json`` (one per size, method and thread count), so sizes can run in separate calls.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from graphrec.bench.worker import peak_rss_mb, timed_json_child  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_knn_scaling import _fmt_s  # noqa: E402  (one seconds format for both kNN benchmarks)

DEFAULT_FEATURES = Path(__file__).resolve().parents[2] / "shared" / "data" / "tiktok-mmssl" / "image_feat.npy"
METHODS = ("exact", "faiss-hnsw", "faiss-ivf", "nn-descent")


def real_like(base, n: int, seed: int):
    """``(n, d)`` float32 features: real rows, then points between a real row and a near real row, plus noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    base = np.asarray(base, dtype=np.float32)
    if n <= len(base):
        return base[rng.permutation(len(base))[:n]].copy()
    unit = base / np.maximum(np.linalg.norm(base, axis=1, keepdims=True), 1e-12)
    near = np.argsort(-(unit @ unit.T), axis=1)[:, 1:11]
    extra = n - len(base)
    i = rng.integers(0, len(base), extra)
    j = near[i, rng.integers(0, near.shape[1], extra)]
    t = rng.random((extra, 1), dtype=np.float32)
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    out[: len(base)] = base
    out[len(base) :] = (1 - t) * base[i] + t * base[j] + rng.normal(size=(extra, base.shape[1])).astype(np.float32) * (0.05 * base.std(axis=0))
    return out


def _paths(args, n: int) -> tuple[Path, Path]:
    return args.work / f"x_{n}_{args.seed}.npy", args.work / f"ref_{n}_{args.seed}_k{args.k}.npz"


def run_ref(args) -> dict[str, Any]:
    """Features and the exact reference of the sampled rows (this process)."""
    import numpy as np
    import torch

    from graphrec.graph.knn import knn_topk

    torch.set_num_threads(args.threads)
    n = args.ref
    xp, rp = _paths(args, n)
    x = real_like(np.load(args.features).astype(np.float32), n, args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    np.save(xp, x)
    sample = np.sort(np.random.default_rng(args.seed + 1).choice(n, min(n, args.recall_rows), replace=False))
    t = time.perf_counter()
    ref = knn_topk(x, args.k, rows=sample, chunk_size=args.chunk_size)
    sec = time.perf_counter() - t
    kth = np.array([ref.data[ref.indptr[i] : ref.indptr[i + 1]].min() for i in sample], dtype=np.float32)
    cnt = np.diff(ref.indptr)[sample]
    np.savez(rp, sample=sample, kth=kth, count=cnt)
    return {"n_items": n, "dim": int(x.shape[1]), "recall_rows": len(sample), "exact_sample_s": round(sec, 3),
            "exact_build_s_projected": round(sec * n / len(sample), 1)}


def run_one(args) -> dict[str, Any]:
    """One size and method, in this process."""
    import numpy as np
    import torch

    from graphrec.graph import ann
    from graphrec.graph.ann import KnnSearch
    from graphrec.graph.knn import knn_topk

    torch.set_num_threads(args.threads)
    n, k = args.one, args.k
    xp, rp = _paths(args, n)
    x = np.load(xp)
    rss_data = peak_rss_mb()
    overrides = _overrides(args.ann_set)
    search = None if args.method == "exact" else KnnSearch.from_config({**overrides, "knn_method": "ann", "ann_backend": args.method}, "bench")
    refresh = np.flatnonzero(np.random.default_rng(args.seed).random(n) < args.refine_fraction)
    rec: dict[str, Any] = {"n_items": n, "dim": int(x.shape[1]), "k": k, "method": args.method, "threads": args.threads, "settings": overrides,
                           "rss_after_data_mib": round(rss_data, 1), "refine_rows": int(len(refresh))}
    t = time.perf_counter()
    graph = knn_topk(x, k, chunk_size=args.chunk_size, search=search)
    rec["build_s"] = round(time.perf_counter() - t, 2)
    if search is not None:
        lt = ann.last_timings
        rec.update(index_s=round(lt.get("index_s", 0.0), 2),
                   query_s=None if lt.get("query_s") is None else round(lt["query_s"], 2), distinct_points=int(lt.get("index_points", n)))
    rec["peak_rss_build_mib"] = round(peak_rss_mb(), 1)
    if not args.no_refine:
        t = time.perf_counter()
        knn_topk(x, k, rows=refresh, chunk_size=args.chunk_size, search=search)
        rec["refine_search_s"] = round(time.perf_counter() - t, 2)
    rec["peak_rss_mib"] = round(peak_rss_mb(), 1)
    # recall of the sampled rows (after the memory reading)
    ref = np.load(rp)
    sample, kth, cnt = ref["sample"], ref["kth"], ref["count"]
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    hits = 0
    for i, s_k, c in zip(sample, kth, cnt):
        found = graph.indices[graph.indptr[i] : graph.indptr[i + 1]]
        hits += min(int(c), int(np.sum(xn[found] @ xn[i] >= s_k - 1e-6)))
    rec["recall_at_k"] = round(hits / int(cnt.sum()), 4)
    rec["mean_degree"] = round(graph.nnz / n, 2)
    return rec


def _overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``["ann_ef_search=128", ...]`` -> ``{"ann_ef_search": 128}`` (integers)."""
    out: dict[str, Any] = {}
    for item in pairs or []:
        key, _, value = item.partition("=")
        out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


def _key(r: dict[str, Any]) -> tuple:
    return (r["n_items"], r["method"], r["threads"], json.dumps(r.get("settings") or {}, sort_keys=True))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="numbers of items")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--features", type=Path, default=DEFAULT_FEATURES, help="(n, d) .npy of real features")
    p.add_argument("--k", type=int, default=10, help="neighbours per row (knn_k)")
    p.add_argument("--chunk-size", type=int, default=2048, help="rows per exact similarity block (knn_chunk_size)")
    p.add_argument("--refine-fraction", type=float, default=0.3, help="share of rows searched by the refinement")
    p.add_argument("--no-refine", action="store_true", help="time the build only")
    p.add_argument("--recall-rows", type=int, default=2000, help="rows whose exact neighbours are the recall reference")
    p.add_argument("--exact-limit", type=int, default=100_000, help="largest size whose exact build is run in full")
    p.add_argument("--threads", type=int, default=1, help="torch/faiss threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ann-set", action="append", metavar="KEY=VALUE", help="an index setting other than its default, e.g. ann_ef_search=128 (repeatable)")
    p.add_argument("--work", type=Path, default=Path("/tmp/graphrec-bench-knn-ann"), help="features and references (large files)")
    p.add_argument("--json", type=Path, default=Path("bench-out/bench_knn_ann.json"), help="output JSON (records merged)")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    p.add_argument("--ref", type=int, help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.ref is not None:
        print(json.dumps(run_ref(args)))
        return 0
    if args.one is not None:
        print(json.dumps(run_one(args)))
        return 0

    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    common = ["--k", str(args.k), "--chunk-size", str(args.chunk_size), "--refine-fraction", str(args.refine_fraction),
              "--recall-rows", str(args.recall_rows), "--threads", str(args.threads), "--seed", str(args.seed),
              "--work", str(args.work), "--features", str(args.features)] + (["--no-refine"] if args.no_refine else [])
    for item in args.ann_set or []:
        common += ["--ann-set", item]
    old = json.loads(args.json.read_text()) if args.json.exists() else {"records": [], "references": []}
    records, refs = old.get("records", []), old.get("references", [])
    for n in args.sizes:
        ref = timed_json_child([sys.executable, __file__, "--ref", str(n), *common], args.threads, console, f"N = {n:,}: features + exact reference")
        refs = [r for r in refs if not (r.get("n_items") == n and r.get("threads") == args.threads)] + [{**ref, "threads": args.threads}]
        for m in args.methods:
            if m == "exact" and n > args.exact_limit:
                continue
            rec = timed_json_child([sys.executable, __file__, "--one", str(n), "--method", m, *common], args.threads, console, f"N = {n:,}: {m}")
            rec.setdefault("n_items", n)
            rec.setdefault("method", m)
            rec.setdefault("threads", args.threads)
            rec.setdefault("settings", _overrides(args.ann_set))
            records = [r for r in records if _key(r) != _key(rec)] + [rec]
            console.print(rec)

    table = Table(title=f"kNN graph, k = {args.k}, TikTok-like features (all records in {args.json})")
    for col in ("items", "method", "thr", "recall@k", "build", "index / query", "refine search (30 %)", "peak RSS"):
        table.add_column(col, justify="right")
    for r in sorted(records, key=lambda r: (r["n_items"], r["threads"], METHODS.index(r["method"]))):
        if "error" in r:
            table.add_row(f"{r['n_items']:,}", r["method"], str(r["threads"]), "failed", "", "", "", "")
            continue
        iq = "-" if "index_s" not in r else f"{_fmt_s(r['index_s'])} / {_fmt_s(r['query_s']) if r['query_s'] is not None else 'joint'}"
        label = r["method"] + "".join(f" {k.removeprefix('ann_')}={v}" for k, v in (r.get("settings") or {}).items())
        table.add_row(f"{r['n_items']:,}", label, str(r["threads"]), f"{r['recall_at_k']:.4f}", _fmt_s(r["build_s"]), iq,
                      _fmt_s(r.get("refine_search_s")), f"{r['peak_rss_mib']:,.0f} MiB")
    for ref in sorted(refs, key=lambda r: r["n_items"]):
        if "error" in ref:
            continue
        if not any(r["n_items"] == ref["n_items"] and r["method"] == "exact" for r in records):
            table.add_row(f"{ref['n_items']:,}", "exact", str(ref["threads"]), "1", f"{_fmt_s(ref['exact_build_s_projected'])} (projected)",
                          "-", "-", "-")
    console.print(table)
    import torch

    from graphrec.graph.ann import faiss_available

    faiss_v = __import__("faiss").__version__ if faiss_available() else None
    env_info = {"python": platform.python_version(), "torch": torch.__version__, "faiss": faiss_v, "platform": platform.platform(),
                "cpu_count": os.cpu_count(), "processor": platform.processor(), "features": str(args.features)}
    payload = {"env": env_info, "args": {k: v for k, v in vars(args).items() if k not in ("one", "ref", "method", "json", "sizes", "methods", "ann_set")},
               "references": refs, "records": records}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(args.json)
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
