"""The ``graphrec`` command line (click + rich).

Every user-fixable problem is printed as one ``Error: ...`` line with exit status 2.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from graphrec.errors import GraphrecError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:  # one line, no usage block
        click.echo(f"Error: {self.format_message()}", err=True)


class GraphrecGroup(click.Group):
    """Turns :class:`GraphrecError` (and a few library errors) into one-line exit-2 errors."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GraphrecError as exc:
            raise UserError(str(exc)) from None
        except KeyboardInterrupt:
            raise UserError("interrupted") from None


def _console(quiet: bool = False) -> Console:
    return Console(stderr=True, quiet=quiet)


PLUGIN_HELP = (
    "Import this module first (repeatable; the current directory is importable), "
    "e.g. --plugin examples.attention_block to register custom blocks or models."
)


def plugin_option(f):
    """The ``--plugin MODULE`` option (repeatable) of the group and of several commands."""
    return click.option("--plugin", "plugins", multiple=True, metavar="MODULE", help=PLUGIN_HELP)(f)


def _import_plugins(plugins: tuple[str, ...]) -> None:
    from graphrec.registry import import_plugins

    import_plugins(plugins)


@click.group(cls=GraphrecGroup, context_settings=CONTEXT)
@click.version_option(package_name="graphrec")
@plugin_option
def cli(plugins) -> None:
    """graphrec: multimodal recommendation with missing modalities, on DGL heterographs.

    \b
    Quick start (embedded synthetic dataset, no files needed):
      graphrec fit lightgcn
      graphrec fit dgmrec --epochs 50 --out runs/dgmrec
      graphrec evaluate runs/dgmrec/model.pt
    \b
    Custom blocks and models (docs/extending.md):
      graphrec --plugin examples.attention_block fit dgmrec --set item_graph_block=attention_item_conv
    """
    _import_plugins(plugins)


# ----------------------------------------------------------------------------- fit
def _prepare_out(out: Path | None, model: str, dataset: str, overwrite: bool) -> Path:
    if out is None:
        out = Path("runs") / f"{model}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and not out.is_dir():
        raise GraphrecError(f"--out '{out}' is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise GraphrecError(f"output folder '{out}' is not empty; choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _group_metrics(topk: list[int]) -> tuple[str, str]:
    """Columns of the per-group table: recall/ndcg at 20, or at the largest computed K."""
    k = 20 if 20 in topk else max(topk)
    return (f"recall@{k}", f"ndcg@{k}")


def resolve_model_config(model: str, config_files: tuple[str, ...], sets: tuple[str, ...], **direct: Any) -> dict:
    from graphrec.config import parse_set, resolve_config
    from graphrec.registry import MODELS, load_builtin

    from graphrec.registry import BLOCKS

    load_builtin()
    cls = MODELS.get(model)
    overrides = parse_set(sets)
    overrides.update({k: v for k, v in direct.items() if v is not None})
    config = resolve_config(model, cls.default_config, config_files, overrides)
    for key in getattr(cls, "block_slots", {}):  # fail before loading data; full checks at build
        name = config.get(key)
        if isinstance(name, str) and name not in BLOCKS:
            try:
                BLOCKS.get(name)
            except GraphrecError as exc:
                raise GraphrecError(f"config key '{key}': {exc}; pass --plugin MODULE if a plugin registers it") from None
    return config


@cli.command(context_settings=CONTEXT)
@click.argument("model")
@click.option("--data-dir", type=click.Path(path_type=Path), help="MMRec-format folder (<name>.inter, <modality>_feat.npy, masks). Default: the embedded synthetic dataset.")
@click.option("--config", "config_files", multiple=True, type=click.Path(), help="YAML file(s) of config overrides, applied in order (e.g. configs/dgmrec/baby.yaml).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override one config key (repeatable), e.g. --set knn_k=20 --set recon=0.")
@click.option("--epochs", type=click.IntRange(min=0), help="Maximum number of epochs (early stopping may end sooner).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), help="Random seed (python, numpy, torch, DGL).")
@click.option("--out", type=click.Path(path_type=Path), help="Output folder for config.yaml, metrics.json and model.pt. Default: runs/<model>-<dataset>-<time>.")
@click.option("--overwrite", is_flag=True, help="Allow writing into a non-empty --out folder.")
@click.option("--quiet", is_flag=True, help="No progress bars or tables.")
@plugin_option
@click.option("--distributed", is_flag=True, help="Data-parallel training in --nproc local processes (gloo on CPU, nccl on GPU, 127.0.0.1). Under torchrun the process group comes from its env vars and this flag is not needed. See docs/scaling.md.")
@click.option("--nproc", type=click.IntRange(min=1), default=2, show_default=True, help="Processes started by --distributed (ignored under torchrun).")
@click.option("--dist-timeout", type=click.FloatRange(min=1), default=1800, show_default=True, help="Seconds a rank waits for the others (rank 0's per-epoch work included) before failing.")
def fit(model, data_dir, config_files, sets, epochs, seed, out, overwrite, quiet, plugins, distributed, nproc, dist_timeout) -> None:
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
        model, config_files, sets, epochs=epochs, seed=seed, data_dir=str(data_dir) if data_dir else None
    )
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
@cli.command(context_settings=CONTEXT)
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


# ----------------------------------------------------------------------------- registry
@cli.command(context_settings=CONTEXT)
@click.argument("name", required=False)
@plugin_option
def models(name, plugins) -> None:
    """List the registered models (built-in and plugins), or the config keys and defaults of model NAME."""
    from graphrec.config import DATA_DEFAULTS, TRAIN_DEFAULTS
    from graphrec.registry import MODELS, load_builtin

    _import_plugins(plugins)
    load_builtin()
    console = Console()
    if name is None:
        table = Table(title="models")
        table.add_column("name", no_wrap=True)
        table.add_column("source", no_wrap=True)
        table.add_column("description")
        for n, cls in MODELS.items():
            table.add_row(n, MODELS.source(n), (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "")
        console.print(table)
        return
    cls = MODELS.get(name)
    slots = getattr(cls, "block_slots", {})
    table = Table(title=f"config keys of {name}")
    table.add_column("key")
    table.add_column("default")
    table.add_column("group")
    for k, v in cls.default_config.items():
        table.add_row(k, repr(v), f"block ({slots[k]})" if k in slots else "model")
    for group, d in (("trainer", TRAIN_DEFAULTS), ("data", DATA_DEFAULTS)):
        for k, v in d.items():
            if k not in cls.default_config:
                table.add_row(k, repr(v), group)
    console.print(table)


@cli.command(context_settings=CONTEXT)
@plugin_option
def blocks(plugins) -> None:
    """List the registered message-passing blocks (built-in and plugins) and the relations they read.

    {m} in a relation stands for every modality. Swap a block into a model with its config
    key, e.g. --set item_graph_block=NAME (see 'graphrec models dgmrec' and docs/extending.md).
    """
    from graphrec.registry import BLOCKS, load_builtin

    _import_plugins(plugins)
    load_builtin()
    table = Table(title="blocks")
    table.add_column("name", no_wrap=True)
    table.add_column("relations", no_wrap=True)
    table.add_column("source", no_wrap=True)
    table.add_column("description")
    for n, cls in BLOCKS.items():
        rels = ", ".join(r[1] if isinstance(r, tuple) else str(r) for r in getattr(cls, "relations", ()))
        table.add_row(n, rels, BLOCKS.source(n), (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "")
    Console().print(table)


# ----------------------------------------------------------------------------- datasets / masks
@cli.group(cls=GraphrecGroup, context_settings=CONTEXT)
def datasets() -> None:
    """Dataset tools."""


@datasets.command("synth", context_settings=CONTEXT)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write (created; must be empty).")
@click.option("--users", type=int, default=800, show_default=True)
@click.option("--items", type=int, default=1000, show_default=True)
@click.option("--modalities", default="image,text", show_default=True, help="Comma-separated modality names.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--mask/--no-mask", default=True, show_default=True, help="Also write missing_items_even.npy (1/(M+1) of items per number of missing modalities).")
@click.option("--overwrite", is_flag=True, help="Allow writing into a non-empty folder.")
def datasets_synth(out, users, items, modalities, seed, mask, overwrite) -> None:
    """Write the embedded synthetic dataset in MMRec format (synthetic.inter, <modality>_feat.npy).

    Feature files hold the true features of every item; the mask file says which are
    to be treated as missing, so retrieval of hidden modalities can be scored.
    """
    from graphrec.data.interactions import atomic_save_npy, write_inter
    from graphrec.data.masks import generate_missing, save_mask_file
    from graphrec.data.synthetic import make_synthetic

    from graphrec.data.features import check_modality_names

    mods = check_modality_names([m.strip() for m in modalities.split(",") if m.strip()], "--modalities")
    if not mods:
        raise GraphrecError("--modalities needs at least one name")
    from graphrec.config import check_range

    check_range("synth_users", users, "--users")
    check_range("synth_items", items, "--items")
    out_dir = _prepare_out(out, "synth", "data", overwrite)
    syn = make_synthetic(n_users=users, n_items=items, modalities=mods, seed=seed)
    write_inter(out_dir / "synthetic.inter", syn.inter.users, syn.inter.items, syn.inter.labels)
    for m, x in syn.features.items():
        atomic_save_npy(out_dir / f"{m}_feat.npy", x)
    if mask:
        save_mask_file(out_dir / "missing_items_even.npy", generate_missing(items, mods, None, seed=1225 + seed))
    click.echo(f"wrote {out_dir}: synthetic.inter ({len(syn.inter.users)} rows), " + ", ".join(f"{m}_feat.npy" for m in mods)
               + (", missing_items_even.npy" if mask else ""))


@datasets.command("prepare", context_settings=CONTEXT)
@click.argument("name", metavar="NAME")
@click.option("--source", type=click.Path(path_type=Path), help="Shared data root (holds tiktok-mmssl/, dgmrec-masks/, ml100k-mm/, ml1m-posters/). Default: $GRAPHREC_SHARED_DATA, else ../shared/data.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write (created; must be empty unless --overwrite).")
@click.option("--overwrite", is_flag=True, help="Allow writing into a non-empty folder (files of the same name are replaced).")
@click.option("--min-rating", type=click.IntRange(0, 5), help="ml100k only: keep ratings >= this as positives (default 0 = every rating).")
@click.option("--valid-seed", type=int, help="ml1m only: seed of the validation split carved from CoLaKG's train.txt (default 2025).")
def datasets_prepare(name, source, out, overwrite, min_rating, valid_seed) -> None:
    """Turn a shared real-data folder into an MMRec-format folder: NAME is tiktok, ml100k or ml1m.

    \b
    tiktok  DGMRec's tiktok(.inter|_del.inter) + masks 0.6/0.75, MMSSL image/audio features
            (float32), new_items.npy for the new-item setting
    ml100k  u.data -> 0-based implicit interactions, chronological 80/10/10 split per user,
            poster/IMDb-text features, natural mask missing_items_natural.npy
    ml1m    CoLaKG train/test + a seeded 10% validation split, poster/title features,
            natural mask (3 items without poster)
    Also writes PREPARED.json (sources, counts, split and missingness rules, licence:
    research use only). See docs/datasets.md.
    """
    from graphrec.data.adapters import prepare_dataset

    console = _console()
    if out.exists():  # fail fast on a non-empty --out; a new folder is only created once the sources check out
        _prepare_out(out, "prepare", name, overwrite)
    with console.status(f"reading and checking the {name} sources"):
        prepared = prepare_dataset(name, source, min_rating=min_rating, valid_seed=valid_seed)
    out_dir = _prepare_out(out, "prepare", name, overwrite)
    with console.status(f"writing {out_dir}") as status:
        files = prepared.write(out_dir, progress=lambda f: status.update(f"writing {out_dir / f}"))
    table = Table(title=f"{name} prepared in {out_dir}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    for key, value in prepared.summary:
        table.add_row(key, value)
    console.print(table)
    console.print(f"wrote {out_dir}: {', '.join(files)} (research use only; see PREPARED.json)")
    stale = sorted(p.name for p in out_dir.iterdir() if p.name not in files)
    if stale:
        console.print(f"[yellow]note:[/] {out_dir} also holds files this command did not write: {', '.join(stale)}")


@cli.command(context_settings=CONTEXT)
@click.option("--data-dir", type=click.Path(path_type=Path), required=True, help="MMRec-format folder.")
@click.option("--ratio", "ratios", multiple=True, required=True, help="Missing ratio in [0, 1) (repeatable: nested masks), or 'even' for 1/(M+1) of items per number of missing modalities.")
@click.option("--modalities", help="Comma-separated modality names (default: every <modality>_feat.npy).")
@click.option("--dataset", help="Name of the <dataset>.inter file when the folder holds several.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=1225, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace existing mask files.")
def mask(data_dir, ratios, modalities, dataset, seed, overwrite) -> None:
    """Write missing-modality masks missing_items_<ratio>.npy (authors' dict format).

    Masks of several ratios made with the same seed are nested: an item missing a
    modality at 0.2 misses the same modalities at 0.4.
    """
    from graphrec.data.dataset import find_inter_file
    from graphrec.data.features import discover_modalities
    from graphrec.data.interactions import read_inter
    from graphrec.data.masks import generate_missing, mask_file_name, save_mask_file

    if not data_dir.is_dir():
        raise GraphrecError(f"data directory '{data_dir}' does not exist")
    _, inter_path = find_inter_file(data_dir, dataset)
    n_items = read_inter(inter_path).n_items
    mods = [m.strip() for m in modalities.split(",")] if modalities else discover_modalities(data_dir)
    if not mods:
        raise GraphrecError(f"no <modality>_feat.npy in '{data_dir}'; name the modalities with --modalities image,text")
    for r in ratios:
        if r == "even":
            ratio = None
        else:
            try:
                ratio = float(r)
            except ValueError:
                raise GraphrecError(f"--ratio '{r}' is not a number in [0, 1) or 'even'") from None
        path = data_dir / mask_file_name(r)
        if path.exists() and not overwrite:
            raise GraphrecError(f"'{path}' exists; pass --overwrite to replace it")
        m = generate_missing(n_items, mods, ratio, seed=seed)
        save_mask_file(path, m)
        counts = np.bincount(m.count(), minlength=len(mods) + 1)
        click.echo(f"wrote {path}: " + ", ".join(f"{k} missing: {c}" for k, c in enumerate(counts)))


# ----------------------------------------------------------------------------- DGMRec tools
def _load_generator(checkpoint: Path):
    from graphrec.train.checkpoint import load_model

    model, dataset, payload = load_model(checkpoint)
    if not hasattr(model, "generated_features"):
        raise GraphrecError(
            f"model '{payload['model']}' does not generate missing modalities; train a generating model such as dgmrec"
        )
    model.eval()
    return model, dataset, payload


@cli.command("refine-graph", context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for the generated features and refined graphs.")
@click.option("--lambda", "lam", type=float, help="Blending weight of the refreshed rows (default: the model's avg_lambda).")
@click.option("--overwrite", is_flag=True, help="Allow writing into a non-empty --out folder.")
@click.option("--observed-rows", type=click.Choice(["input", "trained"]), default="input", show_default=True,
              help="Rows of items that have the modality in <m>_feat_generated.npy: the dataset's own features "
                   "(input) or the model's trained raw table (trained; DGMRec trains it, train_raw_features).")
@plugin_option
def refine_graph(checkpoint, out, lam, overwrite, observed_rows, plugins) -> None:
    """Generate missing modality features with a trained model and refine its item-item graphs.

    \b
    Writes, per modality m:
      <m>_feat_generated.npy   (N, d_m) features; rows of items missing m are generated, the
                               others are the dataset's own (--observed-rows trained: the model's)
      <m>_generated_mask.npy   (N,) bool, True where the row was generated
      <m>_item_graph.npz       refined graph as an edge list (src, dst, weight, refinement, n_items);
                               refinement edges point from neighbours into items missing m
    Items missing every modality are generated too.
    """
    from graphrec.data.interactions import atomic_save_npy, atomic_write_json
    from graphrec.graph.io import save_item_graph

    if lam is not None and not 0.0 <= lam <= 1.0:
        raise GraphrecError(f"--lambda must be in [0, 1], got {lam}")
    _import_plugins(plugins)
    console = _console()
    model, dataset, payload = _load_generator(checkpoint)
    out_dir = _prepare_out(out, "refine", dataset.name, overwrite)
    with console.status("generating features and refining graphs"):
        result = model.export_refined(lam)
    summary = {}
    for m, r in result.items():
        feats = r["features"].astype(np.float32)
        if observed_rows == "input":  # the user's observed features, untouched; the graph rows are the model's
            feats[~r["generated"]] = np.asarray(dataset.features[m], dtype=np.float32)[~r["generated"]]
        atomic_save_npy(out_dir / f"{m}_feat_generated.npy", feats)
        atomic_save_npy(out_dir / f"{m}_generated_mask.npy", r["generated"])
        save_item_graph(out_dir / f"{m}_item_graph.npz", r["graph"], r["refined"])
        refined_edges = int(r["refined"][r["graph"].tocoo().row].sum())
        summary[m] = {"generated_rows": int(r["generated"].sum()), "edges": int(r["graph"].nnz), "refinement_edges": refined_edges}
    atomic_write_json(out_dir / "refine_summary.json", {"checkpoint": str(checkpoint), "observed_rows": observed_rows, "modalities": summary})
    table = Table(title=f"refined graphs of {dataset.name}")
    for col in ("modality", "generated rows", "edges", "refinement edges"):
        table.add_column(col, justify="right" if col != "modality" else "left")
    for m, v in summary.items():
        table.add_row(m, str(v["generated_rows"]), str(v["edges"]), str(v["refinement_edges"]))
    console.print(table)
    console.print(f"wrote {out_dir}")


@cli.command(context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--item", "item", type=int, required=True, help="Item id whose modality is generated.")
@click.option("--modality", "modality", required=True, help="Modality to generate and search in (e.g. image).")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Number of items to return.")
@click.option("--json", "as_json", is_flag=True, help="Print the ranking as JSON.")
def retrieve(checkpoint, item, modality, k, as_json) -> None:
    """Cross-modal retrieval: rank items by similarity of ITEM's generated MODALITY feature.

    The item's feature of the modality is generated from its other modalities and its
    users' preferences, then compared (cosine) with the features of items that have it.
    """
    import torch

    from graphrec.eval.retrieval import rank_by_cosine

    model, dataset, _ = _load_generator(checkpoint)
    if modality not in dataset.modalities:
        raise GraphrecError(f"unknown modality '{modality}'; this dataset has {', '.join(dataset.modalities)}")
    if not 0 <= item < dataset.n_items:
        raise GraphrecError(f"--item {item} is outside 0..{dataset.n_items - 1}")
    if k < 1:
        raise GraphrecError("-k must be at least 1")
    gen = model.generated_features()[modality]
    has = ~dataset.missing.missing[modality]
    cand = np.flatnonzero(has)
    if len(cand) == 0:
        raise GraphrecError(f"no item has modality '{modality}' to retrieve from")
    table_feats = torch.from_numpy(dataset.features[modality][cand])
    query = torch.from_numpy(gen[item : item + 1])
    top = rank_by_cosine(query, table_feats, k)[0].numpy()
    sims = torch.nn.functional.cosine_similarity(query, table_feats[top], dim=1).numpy()
    ranking = [{"rank": r + 1, "item": int(cand[t]), "cosine": float(s)} for r, (t, s) in enumerate(zip(top, sims))]
    status = "missing" if dataset.missing.missing[modality][item] else "observed"
    if as_json:
        click.echo(json.dumps({"item": item, "modality": modality, "status": status, "ranking": ranking}))
        return
    table = Table(title=f"items closest to the generated {modality} of item {item} ({modality} {status})")
    table.add_column("rank", justify="right")
    table.add_column("item", justify="right")
    table.add_column("cosine", justify="right")
    for r in ranking:
        table.add_row(str(r["rank"]), str(r["item"]), f"{r['cosine']:.4f}")
    Console().print(table)


@cli.command("retrieval-eval", context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def retrieval_eval(checkpoint, as_json) -> None:
    """Table 3 protocol: Hit@10/20 of retrieving items from their generated modality vs nearest neighbours.

    For items whose modality m is masked, the generated m feature is compared with the
    true features of all items (needs the true rows in the feature file, e.g. masks
    made with 'graphrec mask' or the synthetic set); hit = the item itself in the top K.
    """
    from graphrec.eval.retrieval import evaluate_retrieval

    model, dataset, payload = _load_generator(checkpoint)
    rows = evaluate_retrieval(model.generated_features(), dataset)
    if as_json:
        click.echo(json.dumps(rows))
        return
    table = Table(title=f"cross-modal retrieval, {payload['model']} on {dataset.name}")
    for col in ("modality", "items", "group", "method", "hit@10", "hit@20"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["modality"], str(r["items"]), r["group"], r["method"],
                      "–" if r["hit@10"] is None else f"{r['hit@10']:.4f}", "–" if r["hit@20"] is None else f"{r['hit@20']:.4f}")
    Console().print(table)


# ----------------------------------------------------------------------------- benchmarks
BENCH_PROTOCOLS = ["missing", "new-items", "ratio-sweep", "ci2mg-sweep", "breakdown", "ablation", "retrieval", "natural"]


@cli.command(context_settings=CONTEXT)
@click.option("--model", "models", multiple=True, required=True, help="Model to run (repeatable, in table order; ratios are relative to the first).")
@click.option("--protocol", type=click.Choice(BENCH_PROTOCOLS), default="missing", show_default=True, help="Evaluation protocol (see below).")
@click.option("--data-dir", type=click.Path(path_type=Path), help="MMRec-format folder. Default: the embedded synthetic dataset.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Config override for every run (repeatable).")
@click.option("--preset", "presets", multiple=True, metavar="MODEL=PATH", help="YAML config for one model's runs (repeatable), e.g. dgmrec=configs/dgmrec/tiktok.yaml.")
@click.option("--seeds", default="2024", show_default=True, help="Comma-separated seeds; each (model, variant) runs once per seed.")
@click.option("--epochs", type=click.IntRange(min=1), help="Maximum epochs of every run (overrides the presets; early stopping may end sooner).")
@click.option("--variant", "variants", multiple=True, help="Run only these variants of the protocol (repeatable), e.g. --variant 'w/o refinement'.")
@click.option("--out", type=click.Path(path_type=Path), help="Output folder (runs/, logs/, results.md, results.json, plots). Default: bench-out/<protocol>.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch/OpenMP threads of each run.")
@click.option("--mask-seed", type=int, default=1225, show_default=True, help="Seed of the nested masks of ratio-sweep / ci2mg-sweep on a data folder.")
@click.option("--dry-run", is_flag=True, help="List the runs (and which are done) without running anything.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@plugin_option
def bench(models, protocol, data_dir, sets, presets, seeds, epochs, variants, out, threads, mask_seed, dry_run, quiet, plugins) -> None:
    """Benchmark MODELs under one protocol of the papers, over seeds; resumable.

    Every (model, variant, seed) trains in its own process (peak RSS per run) and writes
    OUT/runs/<model>__<variant>__seed<k>.json (config, test and group metrics, best epoch,
    seconds per epoch / evaluation / refinement, kNN build time, peak RSS). A run whose
    record exists is skipped, so an interrupted benchmark continues where it stopped.
    OUT/results.md has mean ± std over seeds per model and variant, and time and memory
    relative to the first --model; PNG plots when matplotlib is installed.

    \b
    Protocols:
      missing      the dataset's mask (--set missing_ratio=0.6; synthetic: synth_missing)
      new-items    new-item setting (new_items=true), groups new / old
      ratio-sweep  nested masks, 0/20/40/60/80 % of items missing a modality
      ci2mg-sweep  nested masks, 50/60/70/80/90 %
      breakdown    metrics by number of missing modalities (DGMRec Fig. 3)
      ablation     DGMRec Table 4 / CI2MG Table 3 variants; other models: baseline
      retrieval    DGMRec Table 3: Hit@10/20 of generated features vs nearest neighbours
      natural      natural missingness (missing_items_natural.npy, e.g. ml100k)
    \b
    Examples:
      graphrec bench --model lightgcn --model dgmrec --seeds 2024,2025,2026 --epochs 50
      graphrec bench --model dgmrec --protocol ablation --out bench-out/ablation
      graphrec bench --data-dir data/tiktok --model lightgcn --model dgmrec \\
          --preset dgmrec=configs/dgmrec/tiktok.yaml --set missing_ratio=0.6
    """
    from graphrec.bench.report import write_report
    from graphrec.bench.runner import parse_presets, parse_seeds, plan, run_all
    from graphrec.config import parse_set

    root = click.get_current_context().find_root().params.get("plugins") or ()
    all_plugins = tuple(dict.fromkeys((*root, *plugins)))
    _import_plugins(all_plugins)
    models = list(models)
    out = out or Path("bench-out") / protocol
    if out.exists() and not out.is_dir():
        raise GraphrecError(f"--out '{out}' is a file, not a folder")
    console = _console(quiet)
    p = plan(
        models, protocol, out, data_dir=str(data_dir) if data_dir else None, sets=parse_set(sets),
        presets=parse_presets(presets, models), seeds=parse_seeds(seeds), epochs=epochs,
        variants=list(variants) or None, plugins=all_plugins, threads=threads, mask_seed=mask_seed, write=not dry_run,
    )
    from rich.markup import escape

    for note in p.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    done = [s["id"] for s in p.specs if (out / "runs" / f"{s['id']}.json").is_file()]
    if dry_run:
        for s in p.specs:
            click.echo(f"{s['id']}\t{'done' if s['id'] in done else 'to run'}")
        click.echo(f"{len(p.specs)} runs, {len(done)} done")
        return
    console.print(f"[bold]bench[/] protocol {protocol}: {len(p.specs)} runs ({len(done)} done) -> {out}")
    records, skipped, failed = run_all(p, console, progress=not quiet)
    if skipped:
        console.print(f"skipped {len(skipped)} finished run(s) (records exist in {out / 'runs'})")
    md, plots, plot_note = write_report(p, records, failed)
    if plot_note:
        console.print(f"[yellow]note:[/] {escape(plot_note)}")
    console.print(f"wrote {md}" + (f", {', '.join(plots)}" if plots else ""))
    if failed:
        raise GraphrecError(f"{len(failed)} of {len(p.specs)} runs failed: {', '.join(failed)} (logs in {out / 'logs'})")


from graphrec.cli.featurize import featurize  # noqa: E402 - after `cli` exists; featurize.py does not import main

cli.add_command(featurize)


def main() -> None:
    cli(prog_name="graphrec")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
