"""The scaling scripts of issue 15 run end to end on tiny inputs and write what docs/scaling.md quotes."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO_ROOT, invoke


def _run(*args: str) -> None:
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO_ROOT, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]


def test_bench_sampled_scaling_records(tmp_path):
    js = tmp_path / "s.json"
    _run("benchmarks/bench_sampled_scaling.py", "--sizes", "3000", "--modes", "full", "sampled_sparse", "--fanouts", "3", "3",
         "--per-user", "10", "--time-limit", "100", "--json", str(js))  # fmt: skip
    recs = json.loads(js.read_text())["records"]
    # sampled modes run once per sampler (default: fast and dgl), each with the sampler's own share of a batch
    assert [(r["mode"], r["sampler"]) for r in recs] == [("full", None), ("sampled_sparse", "fast"), ("sampled_sparse", "dgl")]
    for r in recs:
        assert r["partial"] is False and r["batches_timed"] == r["batches_per_epoch"] - 1
        assert r["s_per_batch"] > 0 and r["epoch_s"] >= r["s_per_batch"] and r["interactions"] > 1500 and r["fanouts"] == [3, 3]
        assert (r["sample_s_per_batch"] is None) == (r["mode"] == "full")
        assert r["mode"] == "full" or 0 < r["sample_s_per_batch"] < r["s_per_batch"]
    merged = tmp_path / "m.json"
    _run("benchmarks/bench_sampled_scaling.py", "--merge", str(js), str(js), "--json", str(merged))
    assert len(json.loads(merged.read_text())["records"]) == 6


def test_bench_sampled_scaling_dgmrec(tmp_path):
    js = tmp_path / "d.json"
    _run("benchmarks/bench_sampled_scaling.py", "--model", "dgmrec", "--sizes", "2000", "--modes", "full", "sampled", "sampled_sparse",
         "--fanouts", "3", "3", "--per-user", "10", "--batch-size", "256", "--set", "embedding_size=16", "--set", "aggregation_fanout=4",
         "--time-limit", "100", "--json", str(js))  # fmt: skip
    recs = json.loads(js.read_text())["records"]
    assert [r["mode"] for r in recs] == ["full", "sampled", "sampled_sparse"]  # DGMRec's sparse_embeddings: MixedAdam
    for r in recs:
        assert r["model"] == "dgmrec" and r["hooks_s"] > 0 and r["s_per_batch"] > 0 and r["fanouts"] == [3, 3]
        assert r["users"] == 200 and r["items"] == 200


def test_bench_million_stages(tmp_path):
    d = tmp_path / "d"
    assert invoke("datasets", "synth", "--out", d, "--users", "60", "--items", "200", "--no-mask").exit_code == 0
    js = tmp_path / "m.json"
    _run("benchmarks/bench_million.py", "--data-dir", str(d), "--set", "dataset=synthetic", "--set", "propagation=sampled",
         "--set", "sparse_embeddings=true", "--max-batches", "2", "--set", "train_batch_size=64", "--json", str(js))  # fmt: skip
    stages = json.loads(js.read_text())["stages"]
    names = [s["stage"] for s in stages]
    assert names == ["load", "build (model + graph)", "trainer set-up", "epoch 1 (extrapolated)", "evaluate valid", "evaluate test"]
    assert stages[3]["batches_timed"] == 2 and stages[3]["epoch_s_extrapolated"] > 0
    assert all(s["peak_rss_mb"] > 0 for s in stages) and 0 <= stages[-1]["recall@20"] <= 1
    # a whole epoch with progress lines, then the validation split only
    out = subprocess.run([sys.executable, "benchmarks/bench_million.py", "--data-dir", str(d), "--set", "dataset=synthetic",
                          "--set", "propagation=sampled", "--set", "train_batch_size=64", "--splits", "valid", "--report-every", "2",
                          "--json", str(js)], capture_output=True, text=True, cwd=REPO_ROOT, timeout=240)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    stages = json.loads(js.read_text())["stages"]
    assert [s["stage"] for s in stages] == ["load", "build (model + graph)", "trainer set-up", "epoch 1", "evaluate valid"]
    ticks = [json.loads(line) for line in out.stderr.splitlines() if line.startswith('{"batches"')]
    assert ticks and ticks[0]["batches"] == 2 and ticks[0]["of"] == stages[3]["batches"]
