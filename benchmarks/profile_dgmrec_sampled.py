"""Where a sampled DGMRec training step goes (``propagation: sampled``; docs/scaling.md, "DGMRec sampled").

Builds the synthetic set of ``bench_sampled_scaling.py`` (``--size`` interactions: ``size / 25`` users,
``size / 10`` items, image 128-d + text 96-d, the even missing-modality mask), runs the first epoch's
hooks (CLUB steps, generation, the control variates' history), then

* times ``--batches`` training steps (forward, backward, Adam) after ``--warmup`` ones, ``--rounds``
  times, and prints each round's median / min / max seconds per batch (one JSON line per round);
* with ``--profile N``, profiles N more steps with ``torch.profiler`` and prints milliseconds per batch
  and % of the step per part: the forward's parts (labelled by wrapping graphrec's functions: the
  sampler, the user-item blocks, the gate / item-item hops / user means by the block they propagate,
  encoders, InfoNCE, CLUB, decoders, generators, fusion; "forward, rest" is the gathers and loss glue
  between them), the backward by autograd node (the top ``--top``), and the optimiser step.

    OMP_NUM_THREADS=1 python benchmarks/profile_dgmrec_sampled.py --size 1000000 --fanouts 5 5 5 \\
        --set aggregation_fanout=5 --rounds 3 --profile 3

Runs on the code of the checkout it lives in; copy it into another checkout to profile that code
(its labels wrap functions every release since sampled DGMRec has). One thread, CPU.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1_000_000, help="synthetic interactions (users = size/25, items = size/10)")
    ap.add_argument("--fanouts", type=int, nargs="+", default=[5, 5, 5], help="user-item fan-outs (n_ui_layers = their number)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before each round")
    ap.add_argument("--batches", type=int, default=20, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="profile N more steps (0: no profile)")
    ap.add_argument("--top", type=int, default=12, help="backward nodes listed")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    from graphrec.config import parse_set, resolve_config
    from graphrec.data.dataset import load_dataset
    from graphrec.registry import MODELS, load_builtin
    from graphrec.train.seed import set_seed
    from graphrec.train.trainer import Trainer

    torch.set_num_threads(1)
    load_builtin()
    over = {"device": "cpu", "threads": 1, "synth_users": max(10, args.size // 25), "synth_items": max(20, args.size // 10),
            "synth_interactions": 25, "train_batch_size": args.batch_size, "n_ui_layers": len(args.fanouts),
            "fanouts": args.fanouts, "propagation": "sampled", **parse_set(args.set)}  # fmt: skip
    cfg = resolve_config("dgmrec", MODELS.get("dgmrec").default_config, overrides=over)
    t = time.perf_counter()
    ds = load_dataset(cfg)
    set_seed(args.seed)
    model = MODELS.get("dgmrec")(ds, cfg)
    trainer = Trainer(model, ds, cfg, progress=False)
    model.on_train_start(trainer)
    model.train()
    model.on_epoch_start(trainer, 0)
    print(json.dumps({"setup_s": round(time.perf_counter() - t, 1), "users": ds.n_users, "items": ds.n_items}), flush=True)
    opt = trainer.optimizer
    batches = trainer.sampler.epoch(args.batch_size)

    def step() -> None:
        batch = next(batches)
        opt.zero_grad(set_to_none=True)
        with torch.profiler.record_function("forward"):
            loss = model.loss(batch)["loss"]
        with torch.profiler.record_function("backward"):
            loss.backward()
        with torch.profiler.record_function("optimiser"):
            opt.step()

    for r in range(args.rounds):
        for _ in range(args.warmup):
            step()
        times = []
        for _ in range(args.batches):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        print(json.dumps({"round": r, "median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4),
                          "max_s": round(max(times), 4), "batches": len(times)}), flush=True)  # fmt: skip
    if args.profile:
        profile(model, step, args.profile, args.top)
    return 0


def profile(model, step, n: int, top: int) -> None:
    """Label the forward's parts by wrapping graphrec's functions, profile ``n`` steps, print the breakdown."""
    import torch
    from torch.profiler import ProfilerActivity, record_function

    import graphrec.models.dgmrec as dgmrec_mod
    import graphrec.models.dgmrec_sampled as sampled_mod
    from graphrec.blocks.club import CLUB
    from graphrec.blocks.fusion import ModalityFusion
    from graphrec.blocks.generators import FeatureGenerator, ModalityDecoder
    from graphrec.graph.sampling import NeighbourSampler

    def labelled(fn, label):
        def wrapper(*a, **k):
            with record_function(label if isinstance(label, str) else label(*a)):
                return fn(*a, **k)

        return wrapper

    bs = model.batch_sampler
    bs._samplers()
    names = {id(bs._ui.sampler): "user-item blocks", id(bs._gate.sampler): "preference gate"}
    names.update({id(s): "item-item hops" for s in bs._items.values()})
    tags: dict[int, str] = {}
    sample = NeighbourSampler.sample

    def tagged_sample(self, seeds, device):
        blocks = sample(self, seeds, device)
        if self is bs._mean.sampler and int(seeds.min()) < model.n_users:  # the user means' sampler (maybe the gate's too)
            tags[id(blocks)] = "user means"
        else:
            tags[id(blocks)] = names.get(id(self), "other blocks")
        return blocks

    patches = [
        (sampled_mod, "layer_mean_cv", labelled(sampled_mod.layer_mean_cv, "user-item blocks")),
        (sampled_mod, "last_layer", labelled(sampled_mod.last_layer, lambda b, h: tags.get(id(b), "other blocks"))),
        (sampled_mod, "lookup", labelled(sampled_mod.lookup, "table lookups")),
        (type(bs._ui), "ego", labelled(type(bs._ui).ego, "table lookups")),
        (dgmrec_mod, "infonce_rows", labelled(dgmrec_mod.infonce_rows, "infonce")),
        (dgmrec_mod, "infonce", labelled(dgmrec_mod.infonce, "infonce")),
        (CLUB, "forward", labelled(CLUB.forward, "club")),
        (ModalityDecoder, "forward", labelled(ModalityDecoder.forward, "reconstruction decoders")),
        (FeatureGenerator, "forward", labelled(FeatureGenerator.forward, "generators")),
        (ModalityFusion, "forward", labelled(ModalityFusion.forward, "fusion")),
        (type(model.general_encoder), "forward", labelled(type(model.general_encoder).forward, "encoders")),
        (type(model.specific_encoder), "forward", labelled(type(model.specific_encoder).forward, "encoders")),
    ]  # fmt: skip
    patches += [(f, "forward", labelled(f.forward, "gate maps")) for f in model.preference.maps.values()]  # instances: nn.Linear
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    NeighbourSampler.sample = labelled(tagged_sample, "sampler")
    for obj, name, fn in patches:
        setattr(obj, name, fn)
    try:
        with torch.profiler.profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(n):
                step()
    finally:
        NeighbourSampler.sample = sample
        for obj, name, fn in saved:
            if isinstance(obj, torch.nn.Module):
                del obj.forward  # the instance's wrapper: the class's forward again
            else:
                setattr(obj, name, fn)
    totals: dict[str, float] = collections.defaultdict(float)
    backward: dict[str, float] = collections.defaultdict(float)
    for e in prof.key_averages():
        if e.key.startswith("autograd::engine::evaluate_function: "):
            backward[e.key.split(": ", 1)[1]] += e.cpu_time_total / 1e3 / n
        else:
            totals[e.key] += e.cpu_time_total / 1e3 / n
    parts = ["forward", "backward", "optimiser"]
    step_ms = sum(totals[p] for p in parts)
    labels = ["sampler", "table lookups", "user-item blocks", "preference gate", "gate maps", "item-item hops", "user means", "encoders",
              "fusion", "infonce", "club", "reconstruction decoders", "generators"]  # fmt: skip
    rows = [(p, totals[p]) for p in parts]
    rows += [(f"forward: {k}", totals[k]) for k in labels if totals.get(k)]
    rows.append(("forward: rest (gathers, loss glue)", totals["forward"] - sum(totals.get(k, 0.0) for k in labels)))
    rows += [(f"backward: {k}", v) for k, v in sorted(backward.items(), key=lambda kv: -kv[1])[:top]]
    print(f"{'part':<48} {'ms/batch':>9} {'% step':>7}")
    for name, ms in rows:
        print(f"{name:<48} {ms:9.1f} {100 * ms / step_ms:6.1f}%")
    print(f"{'step (profiled)':<48} {step_ms:9.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
