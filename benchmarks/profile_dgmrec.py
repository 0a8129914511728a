"""Where a DGMRec training step goes, and how close it is to the matrix-multiply roofline.

Times one step (forward, backward, Adam) on full batches, each loss term by switching its weight
off, the propagation parts forward + backward in isolation, the sampler per epoch; counts the
step's FLOPs (dense products from ``torch.profiler``, sparse products as 2·nnz·d) and measures
this core's float32 matrix-multiply rate, and prints one JSON object (milliseconds, GFLOP).

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/profile_dgmrec.py --data-dir /tmp/speed/tiktok \\
        --config configs/dgmrec/tiktok.yaml

Without --data-dir it runs on the embedded synthetic set. Numbers of docs/results.md ("Speed").
Results on ../shared/data folders are for research use only (see each SOURCE.md licence).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def matmul_rate(n: int = 2048, k: int = 64, reps: int = 20) -> float:
    """GFLOP/s of ``(n, k) @ (k, n)`` and ``(n, n) @ (n, k)`` float32 products on this thread."""
    import torch

    a, b, g = torch.randn(n, k), torch.randn(n, k), torch.randn(n, n)
    for _ in range(3):
        a @ b.T, g @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b.T
        g @ b
    return 2 * 2 * n * n * k * reps / (time.perf_counter() - t) / 1e9


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir")
    ap.add_argument("--config", action="append", default=[], help="YAML preset(s), e.g. configs/dgmrec/tiktok.yaml")
    ap.add_argument("--steps", type=int, default=10, help="full batches timed per measurement (the first 2 are warm-up)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from graphrec.config import resolve_config
    from graphrec.data.dataset import load_dataset
    from graphrec.registry import MODELS, load_builtin
    from graphrec.train.seed import set_seed
    from graphrec.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    load_builtin()
    cls = MODELS.get("dgmrec")
    over = {"device": "cpu"}
    if args.data_dir:
        over["data_dir"] = args.data_dir
    cfg = resolve_config("dgmrec", cls.default_config, args.config, over)
    ds = load_dataset(cfg)
    set_seed(int(cfg["seed"]))
    model = cls(ds, cfg)
    tr = Trainer(model, ds, cfg, progress=False)
    tr._model_hook("on_epoch_start", 0)
    bs = int(cfg["train_batch_size"])
    t = time.perf_counter()
    batches = list(tr.sampler.epoch(bs))
    sample_ms = (time.perf_counter() - t) * 1e3
    full = [b for b in batches if len(b.users) == bs][: args.steps] or batches[: args.steps]

    def step_ms(**weights) -> float:
        saved = dict(model.config)
        model.config.update(weights)
        total = 0.0
        for i, b in enumerate(full):
            t0 = time.perf_counter()
            tr.optimizer.zero_grad(set_to_none=True)
            model.loss(b)["loss"].backward()
            tr.optimizer.step()
            if i >= min(2, len(full) - 1):
                total += time.perf_counter() - t0
        model.config.clear()
        model.config.update(saved)
        return total / max(1, len(full) - min(2, len(full) - 1)) * 1e3

    def fwd_bwd_ms(fn, reps: int = 8) -> float:
        fn()
        t = time.perf_counter()
        for _ in range(reps):
            sum(o.sum() for o in fn()).backward()
        model.zero_grad(set_to_none=True)
        return (time.perf_counter() - t) / reps * 1e3

    res: dict = {"dataset": ds.name, "batch": bs, "steps_per_epoch": len(batches), "threads": args.threads}
    res["step_ms"] = step_ms()
    for key, weight in (("infonce", {"intraModal": 0.0, "alignBM": 0.0, "interModal": 0.0}), ("club", {"sampler": 0.0}),
                        ("recon", {"recon": 0.0}), ("generation", {"additive": 0.0})):  # fmt: skip
        res[f"{key}_ms"] = res["step_ms"] - step_ms(**weight)
    b = full[0]
    tr.optimizer.zero_grad(set_to_none=True)
    model.loss(b)["loss"].backward()
    t = time.perf_counter()
    tr.optimizer.step()
    res["adam_ms"] = (time.perf_counter() - t) * 1e3
    g, mods = model.graph, model.modalities
    feats = {m: model.raw[m] for m in mods}
    h = [torch.randn(model.n_items, model.embedding_size, requires_grad=True) for _ in range(2 * len(mods))]
    res["propagation_ms"] = fwd_bwd_ms(lambda: (lambda o: [o["zu"], o["zi"]])(model.propagate(g)))
    res["ui_lightgcn_ms"] = fwd_bwd_ms(lambda: list(model.lightgcn(g, model.user_emb, model.item_emb)))
    res["encoders_ms"] = fwd_bwd_ms(lambda: [*model.general_encoder(feats).values(), *model.specific_encoder(feats).values()])
    res["preference_ms"] = fwd_bwd_ms(lambda: list(model.preference(g, model.user_emb)[1].values()))
    res["item_graph_ms"] = fwd_bwd_ms(lambda: [model.item_propagation(g, x, mods[i % len(mods)]) for i, x in enumerate(h)])
    res["user_aggregation_ms"] = fwd_bwd_ms(lambda: [model.user_aggregation(g, x) for x in h])
    res["sampling_ms_per_epoch"] = sample_ms

    sparse = {"flops": 0}
    plain_mm = torch.sparse.mm

    def counting_mm(a, x):
        sparse["flops"] += 2 * a._nnz() * x.shape[1]
        return plain_mm(a, x)

    torch.sparse.mm = counting_mm
    try:
        with profile(activities=[ProfilerActivity.CPU], with_flops=True, record_shapes=True) as prof:
            tr.optimizer.zero_grad(set_to_none=True)
            model.loss(b)["loss"].backward()
    finally:
        torch.sparse.mm = plain_mm
    big = {model.n_users, model.n_items}
    dense = 0
    for e in prof.key_averages(group_by_input_shape=True):
        # sparse (U|N) x (U|N) operands are counted above, not as dense products
        if e.flops and not any(len(s) == 2 and s[0] in big and s[1] in big for s in e.input_shapes if s):
            dense += e.flops
    res["dense_gflop_per_step"] = dense / 1e9
    res["sparse_gflop_per_step"] = sparse["flops"] / 1e9
    rate = matmul_rate()
    res["matmul_gflops"] = rate
    res["roofline_ms_per_step"] = (dense + sparse["flops"]) / 1e9 / rate * 1e3
    res["share_of_roofline"] = res["roofline_ms_per_step"] / res["step_ms"]
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
