"""Diagnostic: a trained content -> ID map for dgmrec_cold's new items, against its kNN rows (docs/results.md).

For every saved ``dgmrec_cold`` checkpoint of ``benchmarks/bench_new_items.py`` (``--out``), an MLP
(``Linear(D_in, 256) -> tanh -> Linear(256, d)``) is trained after DGMRec, on the frozen model: input
the item's modality encodings ``[g_m; s_m]`` of its observed modalities (``--inputs enc``; or its raw
feature rows, ``--inputs raw``), zeroed for missing ones, and the observed flags; modality dropout
(each observed modality of a training item dropped with ``--dropout``, at least one kept); loss BPR
of ``<z_u, c_p>`` against ``<z_u, c_n>`` on the training interactions (negatives: uniform old items),
plus ``--mse`` times ``mean((c_p - z_p)^2)``. The new items' rows ``c_i`` are then scored exactly as
``dgmrec_cold`` scores its kNN rows (per-user standardisation, shift chosen on validation by
``cold_budget: expected`` with ``--margin``), and the test split is evaluated with the bench's groups.

    OMP_NUM_THREADS=1 python benchmarks/diag_cold_map.py --out bench-out/new-items-synth --seeds 2024,2025,2026

Writes ``map-<inputs>-d<dropout>-e<epochs>-mse<mse>-z<margin>-seed<k>.json`` beside the checkpoints and
prints new-item Recall@20 and the old-item cost per seed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def train_map(model, ds, inputs: str, dropout: float, epochs: int, mse: float, seed: int):
    """``(N, d)`` rows of every item from the trained map (module docstring)."""
    import torch

    from graphrec.blocks.bpr import bpr_loss

    with torch.no_grad():
        out = model.propagate(model.infer_graph)
        model._last = None
    mods = model.modalities
    obs = torch.from_numpy(model._observed).float()
    feat = {m: (torch.cat([out["g"][m], out["s"][m]], 1) if inputs == "enc" else model.raw[m]).detach() for m in mods}
    zu, zi = out["zu"].detach(), out["zi"].detach()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    d_in = sum(x.shape[1] for x in feat.values()) + len(mods)
    net = torch.nn.Sequential(torch.nn.Linear(d_in, 256), torch.nn.Tanh(), torch.nn.Linear(256, zu.shape[1]))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def rows(items, keep):
        return net(torch.cat([feat[m][items] * keep[:, i:i + 1] for i, m in enumerate(mods)] + [keep], 1))

    def dropped(items):
        o = obs[items]
        keep = (torch.rand(o.shape, generator=gen) >= dropout).float() * o
        none = keep.sum(1) == 0
        keep[none] = o[none]
        return keep

    train = torch.from_numpy(ds.train)
    old = torch.nonzero(~model.untrained).squeeze(1)
    for _ in range(epochs):
        perm = torch.randperm(len(train), generator=gen)
        for lo in range(0, len(train), 1024):
            b = train[perm[lo:lo + 1024]]
            u, p = b[:, 0], b[:, 1]
            n = old[torch.randint(0, len(old), (len(u),), generator=gen)]
            cp, cn = rows(p, dropped(p)), rows(n, dropped(n))
            loss = bpr_loss((zu[u] * cp).sum(1), (zu[u] * cn).sum(1))
            if mse > 0:
                loss = loss + mse * ((cp - zi[p]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return rows(torch.arange(len(obs)), obs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", default="2024,2025,2026")
    ap.add_argument("--inputs", choices=("enc", "raw"), default="enc")
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--mse", type=float, default=0.0)
    ap.add_argument("--margin", type=float, default=0.0)
    args = ap.parse_args()
    import torch

    from bench_new_items import _row, groups

    from graphrec.train.checkpoint import load_model  # first: graphrec.eval alone imports the models late

    from graphrec.eval.evaluator import Evaluator
    from graphrec.models.base import Scorer
    from graphrec.models.cold_budget import choose_shift_expected, old_cost
    from graphrec.models.cold_offset import affine_rows, user_affine

    torch.set_num_threads(1)
    tag = f"map-{args.inputs}-d{args.dropout:g}-e{args.epochs}-mse{args.mse:g}-z{args.margin:g}"
    for seed in (int(s) for s in args.seeds.split(",")):
        model, ds, cfg = load_model(args.out / f"dgmrec_cold-seed{seed}.pt")
        model.eval()
        c_all = train_map(model, ds, args.inputs, args.dropout, args.epochs, args.mse, seed)
        with torch.no_grad():
            zu, zi, *_ = model._scoring()
            cold = model.cold_items
            c = c_all[cold]
            a, b, s = user_affine(zu, zi, ~model.untrained, c, True)
            old = (~model.untrained).numpy()
            cost = old_cost(*affine_rows(zu, zi, cold, c, a, b, s, 0.0), cold, s, ds, old)
            info = choose_shift_expected(cost, float(model.config["cold_tolerance"]), args.margin)
            ev = Evaluator(ds, groups=groups(ds), mask_valid_in_test=bool(cfg.get("eval_mask_valid_in_test", True)))
            res = _row(ev.evaluate(Scorer(*affine_rows(zu, zi, cold, c, a, b, s, info["t"])), "test"))
            plain = _row(ev.evaluate(Scorer(zu, zi), "test"))
        rec = {"seed": seed, "args": vars(args) | {"out": str(args.out)}, "t": info["t"], "map": res, "dgmrec": plain}
        (args.out / f"{tag}-seed{seed}.json").write_text(json.dumps(rec, indent=2))
        print(f"seed {seed}: new R@20 {res['new']['recall@20']:.4f} NDCG@20 {res['new']['ndcg@20']:.4f}, old vs plain "
              f"{100 * (res['old']['recall@20'] / plain['old']['recall@20'] - 1):+.1f} %, t {info['t']:.3f}", flush=True)


if __name__ == "__main__":
    main()
