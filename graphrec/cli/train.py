"""``graphrec fit`` and ``graphrec evaluate``: training runs and evaluation of checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import click
import yaml
from rich.console import Console
from rich.table import Table

from graphrec.cli.common import (
    CONTEXT,
    _console,
    _group_metrics,
    _import_plugins,
    _prepare_out,
    plugin_option,
    resolve_model_config,
)


@click.command(context_settings=CONTEXT)
@click.argument("model")
@click.option("--data-dir", type=click.Path(path_type=Path), help="MMRec-format folder (<name>.inter, <modality>_feat.npy, masks). Default: the embedded synthetic dataset.")
@click.option("--config", "config_files", multiple=True, type=click.Path(), help="YAML file(s) of config overrides, applied in order (e.g. configs/dgmrec/baby.yaml).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override one config key (repeatable), e.g. --set knn_k=20 --set recon=0.")
@click.option("--epochs", type=click.IntRange(min=0), help="Maximum number of epochs (early stopping may end sooner).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), help="Random seed (python, numpy, torch, DGL).")
@click.option("--device", help="auto (the GPU when torch sees one, else the CPU), cpu, cuda or cuda:N. Default: config key 'device' (auto).")
@click.option("--threads", type=click.IntRange(min=0), help="CPU threads of torch; 0 = all this process may use ($OMP_NUM_THREADS if set). Default: config key 'threads' (0).")
@click.option("--out", type=click.Path(path_type=Path), help="Output folder for config.yaml, metrics.json and model.pt. Default: runs/<model>-<dataset>-<time>.")
@click.option("--overwrite", is_flag=True, help="Allow writing into a non-empty --out folder.")
@click.option("--quiet", is_flag=True, help="No progress bars or tables.")
@plugin_option
@click.option("--distributed", is_flag=True, help="Data-parallel training in --nproc local processes (gloo on CPU, nccl on GPU, 127.0.0.1). Under torchrun the process group comes from its env vars and this flag is not needed. See docs/scaling.md.")
@click.option("--nproc", type=click.IntRange(min=1), default=2, show_default=True, help="Processes started by --distributed (ignored under torchrun).")
@click.option("--dist-timeout", type=click.FloatRange(min=1), default=1800, show_default=True, help="Seconds a rank waits for the others (rank 0's per-epoch work included) before failing.")
def fit(model, data_dir, config_files, sets, epochs, seed, device, threads, out, overwrite, quiet, plugins, distributed, nproc, dist_timeout) -> None:
    """Train MODEL (see 'graphrec models') and evaluate it on the test split.

    Trains with BPR and Adam, evaluates the validation split every eval_step epochs,
    stops early on valid_metric, restores the best epoch and reports test metrics.

    \b
    Data-parallel (docs/scaling.md):
      graphrec fit lightgcn --distributed --nproc 2
      torchrun --nproc_per_node 4 -m graphrec.cli.main fit dgmrec --config configs/dgmrec/baby.yaml
    """
    from graphrec.train.distributed import launched_env, spawn_local

    _import_plugins(plugins)
    console = _console(quiet)
    config = resolve_model_config(
        model, config_files, sets, epochs=epochs, seed=seed, data_dir=str(data_dir) if data_dir else None,
        device=device, threads=threads,
    )
    from graphrec.train.seed import resolve_device

    resolve_device(str(config["device"]))  # an unknown device or a missing GPU is an error before loading data
    if distributed and launched_env() is None:  # start the ranks here; each runs _fit_worker
        root = click.get_current_context().find_root().params.get("plugins") or ()
        spawn_local(_fit_worker, nproc, (model, config, out, overwrite, quiet, tuple(dict.fromkeys((*root, *plugins))), dist_timeout))
        return
    _fit_run(model, config, out, overwrite, quiet, console, dist_timeout)


def _fit_worker(model, config, out, overwrite, quiet, plugins, dist_timeout) -> None:
    """One rank of ``graphrec fit --distributed`` (started by :func:`graphrec.train.distributed.spawn_local`)."""
    _import_plugins(plugins)
    _fit_run(model, config, out, overwrite, quiet, _console(quiet), dist_timeout)


def _fit_run(model, config, out, overwrite, quiet, console, dist_timeout) -> None:
    """Train, evaluate and write the run folder; under torchrun/--distributed one rank of the group."""
    from graphrec.train.distributed import init_distributed, shutdown

    dist = init_distributed(str(config.get("device", "auto")), dist_timeout)
    try:
        _fit_body(model, config, out, overwrite, quiet, console if dist.is_main else _console(True), dist)
    finally:
        shutdown()


def _fit_body(model, config, out, overwrite, quiet, console, dist) -> None:
    from graphrec.data.dataset import load_dataset
    from graphrec.models.build import build_model
    from graphrec.train.checkpoint import save_checkpoint
    from graphrec.train.distributed import share_from_main
    from graphrec.train.trainer import Trainer, groups_table, summary_table

    import torch

    from graphrec.train.seed import resolve_threads

    if not dist.enabled or int(config.get("threads", 0)) > 0:  # ranks otherwise share the cores (distributed.py)
        torch.set_num_threads(resolve_threads(int(config.get("threads", 0))))
    with console.status("loading data"):
        dataset = load_dataset(config)
    # rank 0 prepares the folder (and is the only writer); a problem there stops every rank
    out_dir = Path(share_from_main(dist, lambda: str(_prepare_out(out, model, dataset.name, overwrite))))
    if dist.enabled:
        console.print(f"data-parallel: {dist.world_size} processes, backend {dist.backend}")
    console.print(f"[bold]{model}[/] on [bold]{dataset.name}[/]: {dataset.n_users} users, {dataset.n_items} items, "
                  f"{len(dataset.train)} train rows, modalities {', '.join(dataset.modalities) or 'none'}")
    from graphrec.data.interactions import atomic_write_bytes, atomic_write_json

    if dist.is_main:
        atomic_write_bytes(out_dir / "config.yaml", yaml.safe_dump(config, sort_keys=True).encode())
    with console.status(f"building {model}"):
        net = build_model(dataset, config)  # seeds first (spec 2.2)
    trainer = Trainer(net, dataset, config, console=console, progress=not quiet, dist=dist)
    result = trainer.fit()
    if not dist.is_main:
        return
    extra = {"distributed": {"world_size": dist.world_size, "backend": dist.backend}} if dist.enabled else {}
    save_checkpoint(out_dir / "model.pt", trainer.model, config, extra={"dataset": dataset.summary(), "result": result.to_dict()})
    atomic_write_json(out_dir / "metrics.json", {"model": model, "dataset": dataset.summary(), **result.to_dict(), **extra})
    console.print(summary_table(result, title=f"{model} on {dataset.name} (best epoch {result.best_epoch}, {result.seconds:.1f}s)"))
    if result.test and result.test.groups:
        console.print(groups_table(result.test, _group_metrics(trainer.evaluator.topk)))
    console.print(f"wrote {out_dir}/config.yaml, metrics.json, model.pt")
    if quiet:
        click.echo(json.dumps({"out": str(out_dir), "test": result.test.metrics if result.test else None}))


# ----------------------------------------------------------------------------- evaluate
@click.command(context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--split", type=click.Choice(["valid", "test"]), default="test", show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), help="Evaluate on this folder instead of the training data (same ids).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override evaluation keys, e.g. --set topk=[5,10].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@plugin_option
def evaluate(checkpoint, split, data_dir, sets, as_json, plugins) -> None:
    """Evaluate a trained CHECKPOINT (model.pt or its run folder) with full ranking.

    Plugin modules recorded in the checkpoint are imported automatically.
    """
    from graphrec.config import parse_set
    from graphrec.data.interactions import json_default
    from graphrec.eval.evaluator import Evaluator
    from graphrec.train.checkpoint import load_model
    from graphrec.train.trainer import groups_table

    _import_plugins(plugins)
    overrides = parse_set(sets)
    if data_dir:
        overrides["data_dir"] = str(data_dir)
    model, dataset, payload = load_model(checkpoint, overrides=overrides)
    cfg = {**payload["config"], **overrides}
    model.eval()
    ev = Evaluator(dataset, topk=cfg.get("topk", [10, 20, 50]), batch_size=int(cfg.get("eval_batch_size", 2048)),
                   mask_valid_in_test=bool(cfg.get("eval_mask_valid_in_test", True)),
                   item_chunk=int(cfg.get("eval_item_chunk", 0)))
    res = ev.evaluate(model.scorer(), split)
    if as_json:
        click.echo(json.dumps({"model": payload["model"], **res.to_dict()}, default=json_default))
        return
    console = Console()
    table = Table(title=f"{payload['model']} on {dataset.name}: {split} ({res.n_users} users)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in res.metrics.items():
        table.add_row(k, f"{v:.4f}")
    console.print(table)
    if res.groups:
        console.print(groups_table(res, _group_metrics(ev.topk)))
