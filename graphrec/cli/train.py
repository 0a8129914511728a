"""``graphrec fit`` and ``graphrec evaluate``: training runs and evaluation of checkpoints."""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
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
    all_plugins,
    plugin_option,
    resolve_model_config,
    stage,
    trust_option,
)
from graphrec.errors import GraphrecError


@click.command(context_settings=CONTEXT)
@click.argument("model", required=False)
@click.option("--data-dir", type=click.Path(path_type=Path), help="MMRec-format folder (<name>.inter, <modality>_feat.npy, masks). Default: the embedded synthetic dataset.")
@click.option("--config", "config_files", multiple=True, type=click.Path(), help="YAML file(s) of config overrides, applied in order (e.g. configs/dgmrec/baby.yaml).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override one config key (repeatable), e.g. --set knn_k=20 --set recon=0.")
@click.option("--epochs", type=click.IntRange(min=1), help="Maximum number of epochs, at least 1 (early stopping may end sooner).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), help="Random seed (python, numpy, torch, DGL).")
@click.option("--device", help="auto (the GPU when torch sees one, else the CPU), cpu, cuda or cuda:N. Default: config key 'device' (auto).")
@click.option("--threads", type=click.IntRange(min=0), help="CPU threads of torch; 0 = all this process may use ($OMP_NUM_THREADS if set). Default: config key 'threads' (0).")
@click.option("--out", type=click.Path(path_type=Path), help="Run folder (config.yaml, run.json, train.log, history.jsonl, model.pt, metrics.json). Default: runs/<model>-<dataset>-<time>.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder in --out (the new run is swapped in when it finishes).")
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path), metavar="DIR", help="Continue the interrupted run in DIR from its last evaluation, with its own settings (MODEL may be omitted).")
@click.option("--logger", type=click.Choice(["none", "tensorboard"]), default="none", show_default=True, help='Also log scalars to DIR/tensorboard (needs pip install -e ".[tensorboard]").')
@click.option("--quiet", is_flag=True, help="No progress bars, lines or tables.")
@plugin_option
@click.option("--distributed", is_flag=True, help="Data-parallel training in --nproc local processes (gloo on CPU, nccl on GPU, 127.0.0.1). Under torchrun the process group comes from its env vars and this flag is not needed. See docs/scaling.md.")
@click.option("--nproc", type=click.IntRange(min=1), default=2, show_default=True, help="Processes started by --distributed (ignored under torchrun).")
@click.option("--dist-timeout", type=click.FloatRange(min=1), default=1800, show_default=True, help="Seconds a rank waits for the others (rank 0's per-epoch work included) before failing.")
def fit(model, data_dir, config_files, sets, epochs, seed, device, threads, out, overwrite, resume_dir, logger, quiet, plugins, distributed, nproc, dist_timeout) -> None:
    """Train MODEL (see 'graphrec models') and evaluate it on the test split.

    Trains with BPR and Adam, evaluates the validation split every eval_step epochs,
    stops early on valid_metric, restores the best epoch and reports test metrics.
    After every evaluation the run folder holds the best-so-far model.pt and what
    --resume needs; Ctrl-C or SIGTERM stops with exit code 130/143 (0 when the
    run had already finished writing its results).

    \b
    Interrupted runs:
      graphrec fit --resume runs/dgmrec-baby-20250101-120000
    Data-parallel (docs/scaling.md):
      graphrec fit lightgcn --distributed --nproc 2
      torchrun --nproc_per_node 4 -m graphrec.cli.main fit dgmrec --config configs/dgmrec/baby.yaml
    """
    from graphrec.train.distributed import launched_env, spawn_local
    from graphrec.train.interrupt import as_interrupted, handle_signals
    from graphrec.train.seed import resolve_device

    _import_plugins(plugins)
    console = _console(quiet)
    if logger == "tensorboard":
        from graphrec.train.loggers import require_tensorboard

        require_tensorboard()
    try:
        with handle_signals():
            if resume_dir is not None:
                given = {"--config": config_files, "--set": sets, "--epochs": epochs is not None, "--seed": seed is not None,
                         "--data-dir": data_dir, "--out": out, "--overwrite": overwrite,
                         "--device": device, "--threads": threads is not None}
                clash = [k for k, v in given.items() if v]
                if clash:
                    raise GraphrecError(f"--resume continues a run with its own settings; drop {', '.join(clash)}")
                if distributed or launched_env() is not None:
                    raise GraphrecError("--resume runs in one process (it continues the same global batches); "
                                        "drop --distributed / do not start it under torchrun")
                _fit_resume(model, resume_dir, logger, quiet, console)
                return
            if model is None:
                raise GraphrecError("missing MODEL (see 'graphrec models'), or pass --resume DIR")
            config = resolve_model_config(
                model, config_files, sets, epochs=epochs, seed=seed, data_dir=str(data_dir) if data_dir else None,
                device=device, threads=threads,
            )
            resolve_device(str(config["device"]))  # an unknown device or a missing GPU is an error before loading data
            if distributed and launched_env() is None:  # start the ranks here; each runs _fit_worker
                spawn_local(_fit_worker, nproc, (model, config, out, overwrite, quiet, all_plugins(plugins), dist_timeout, logger))
                return
            _fit_run(model, config, out, overwrite, quiet, console, dist_timeout, logger)
    except KeyboardInterrupt as exc:  # before training into a run folder began (after: _train_in_folder reports)
        intr = as_interrupted(exc)
        if resume_dir is not None:  # while reading resume.pt or the data: the folder was not changed
            click.echo(f"Interrupted by {intr.name} before the run continued; {resume_dir} is unchanged: continue "
                       f"with 'graphrec fit --resume {resume_dir}'", err=True)
        elif distributed:  # the ranks were stopped; rank 0 marked its folder
            click.echo(f"Interrupted by {intr.name}; the {nproc} ranks were stopped; continue the run folder in one "
                       "process with 'graphrec fit --resume DIR'", err=True)
        else:
            click.echo(f"Interrupted by {intr.name}; no run folder was written", err=True)
        sys.exit(intr.exit_code)


def _fit_worker(model, config, out, overwrite, quiet, plugins, dist_timeout, logger="none") -> None:
    """One rank of ``graphrec fit --distributed`` (started by :func:`graphrec.train.distributed.spawn_local`)."""
    from graphrec.train.interrupt import handle_signals

    _import_plugins(plugins)
    with handle_signals():
        _fit_run(model, config, out, overwrite, quiet, _console(quiet), dist_timeout, logger)


def _fit_run(model, config, out, overwrite, quiet, console, dist_timeout, logger="none") -> None:
    """Train, evaluate and write the run folder; under torchrun/--distributed one rank of the group."""
    from graphrec.train.distributed import init_distributed, shutdown

    dist = init_distributed(str(config.get("device", "auto")), dist_timeout)
    interrupted = False
    try:
        _fit_body(model, config, out, overwrite, quiet, console if dist.is_main else _console(True), dist, logger=logger)
    except (KeyboardInterrupt, SystemExit):
        interrupted = True  # every rank is being stopped: no barrier with ranks that may be gone
        raise
    finally:
        if not interrupted:
            shutdown()


def _fit_resume(model, resume_dir, logger, quiet, console) -> None:
    """``graphrec fit --resume DIR``: lock DIR, rebuild the run from its resume.pt and continue it."""
    from graphrec.registry import MODELS, load_builtin
    from graphrec.train.checkpoint import with_defaults
    from graphrec.train.distributed import SINGLE
    from graphrec.train.resume import read_resume
    from graphrec.train.run_folder import RunFolder

    load_builtin()
    run = RunFolder.reopen(resume_dir)  # one-line errors for non-runs, finished runs and live runs
    try:
        state = read_resume(run.path)
        saved = state["config"]
        if model is not None and model != saved["model"]:
            raise GraphrecError(f"run '{resume_dir}' trains '{saved['model']}', not '{model}'")
        # keys added to the model since the run started take their defaults (which keep the earlier behaviour)
        config = state["config"] = with_defaults(MODELS.get(saved["model"]), saved)
    except BaseException:
        run.release()
        raise
    _fit_body(config["model"], config, None, False, quiet, console, SINGLE, run=run, resume_state=state, logger=logger)


def _fit_body(model, config, out, overwrite, quiet, console, dist, run=None, resume_state=None, logger="none") -> None:
    from graphrec.data.dataset import load_dataset
    from graphrec.train.distributed import share_from_main
    from graphrec.train.run_folder import RunFolder

    try:
        with stage(console, "loading data"):
            dataset = load_dataset(config)
        if run is None:  # rank 0 prepares and locks the folder (and is the only writer); a problem there stops every rank
            box: list = []

            def create() -> str:
                box.append(RunFolder.create(out, model, dataset.name, overwrite))
                return str(box[0].final_path)

            final = share_from_main(dist, create)
            run = box[0] if box else None
            if dist.enabled:
                console.print(f"data-parallel: {dist.world_size} processes, backend {dist.backend}")
        else:
            final = str(run.final_path)
        _train_in_folder(model, config, dataset, run, Path(final), quiet, console, dist, resume_state, logger)
    finally:
        if run is not None:
            run.release()


def _train_in_folder(model, config, dataset, run, final, quiet, console, dist, resume_state, logger) -> None:
    """Train into the locked ``run`` (``None`` on ranks other than 0), keeping it resumable; see graphrec.train.resume."""
    from graphrec.data.interactions import atomic_write_bytes, atomic_write_json
    from graphrec.models.base import graphs_from_state
    from graphrec.models.build import build_model
    from graphrec.train.checkpoint import save_checkpoint
    from graphrec.train.interrupt import as_interrupted, critical
    from graphrec.train.loggers import LineLogger, TensorBoardLogger, summary_writer
    from graphrec.train.resume import RESUME_FILE, RunCheckpointer, restore_trainer
    from graphrec.train.trainer import Trainer, groups_table, summary_table

    console.print(f"[bold]{model}[/] on [bold]{dataset.name}[/]: {dataset.n_users} users, {dataset.n_items} items, "
                  f"{len(dataset.train)} train rows, modalities {', '.join(dataset.modalities) or 'none'}")
    callbacks = []
    trainer = None
    try:
        if run is not None:
            checkpointer = RunCheckpointer(run, {"dataset": dataset.summary()})
            callbacks += [checkpointer, LineLogger(run.log)]
            if logger == "tensorboard":
                purge = int(resume_state["loop"]["next_epoch"]) + 1 if resume_state else None
                callbacks.append(TensorBoardLogger(summary_writer(run.path / "tensorboard", purge_step=purge)))
            if resume_state is None:
                atomic_write_bytes(run.path / "config.yaml", yaml.safe_dump(config, sort_keys=True).encode())
                run.log(f"start model={model} dataset={dataset.name} seed={config.get('seed')} epochs={config.get('epochs')} "
                        f"valid_metric={_valid_metric(config)}")
            run.write_status("running", model=model, dataset=dataset.name, out=str(final))
        with stage(console, f"building {model}"), graphs_from_state() if resume_state is not None else nullcontext():
            net = build_model(dataset, config)  # seeds first (spec 2.2); resumed: the graphs come from the state
        trainer = Trainer(net, dataset, config, callbacks=callbacks, console=console, progress=not quiet, dist=dist)
        if resume_state is not None:
            restore_trainer(trainer, resume_state, run.path / RESUME_FILE)
            if resume_state["best_is_current"]:  # model.pt may predate resume.pt (see graphrec.train.resume)
                checkpointer.save_best(trainer)
            at = trainer.resume_at
            run.log(f"resumed epoch={trainer.loop.next_epoch}{f' batch={at.batch}' if at else ''} best_epoch={trainer.loop.best_epoch}")
            where = f"at batch {at.batch + 1} of {at.n_batches} in epoch {at.epoch + 1}" if at else f"after epoch {trainer.loop.next_epoch}"
            console.print(f"resuming {run.path} {where} (best epoch {trainer.loop.best_epoch})")
        result = trainer.fit()
    except KeyboardInterrupt as exc:
        intr = as_interrupted(exc)
        if run is None:
            raise
        _report_interrupt(run, intr, trainer)
        sys.exit(intr.exit_code)
    except BaseException as exc:
        if run is not None:
            try:
                run.write_status("failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
            except OSError:  # the folder itself is the problem; the original error says so
                pass
        raise
    if run is None:
        return
    extra = {"distributed": {"world_size": dist.world_size, "backend": dist.backend}} if dist.enabled else {}
    out_dir = None  # set once the folder is in place and marked finished
    try:
        with critical():  # a signal here is held back until the block ends (the run has then finished)
            save_checkpoint(run.path / "model.pt", trainer.model, config, extra={"dataset": dataset.summary(), "result": result.to_dict()})
            atomic_write_json(run.path / "metrics.json", {"model": model, "dataset": dataset.summary(), **result.to_dict(), **extra})
            done = run.finish()
            (run.path / RESUME_FILE).unlink(missing_ok=True)
            run.write_status("finished", epoch=result.epochs_run, best_epoch=result.best_epoch)
            out_dir = done
        console.print(summary_table(result, title=f"{model} on {dataset.name} (best epoch {result.best_epoch}, {result.seconds:.1f}s)"))
        if result.test and result.test.groups:
            console.print(groups_table(result.test, _group_metrics(trainer.evaluator.topk)))
        console.print(f"wrote {out_dir}: config.yaml, metrics.json, model.pt, history.jsonl, train.log, run.json")
        if quiet:
            click.echo(json.dumps({"out": str(out_dir), "test": result.test.metrics if result.test else None}))
    except KeyboardInterrupt as exc:
        intr = as_interrupted(exc)
        if out_dir is None:  # not by a signal (those wait for the block's end): the folder is still resumable
            _report_interrupt(run, intr, trainer)
            sys.exit(intr.exit_code)
        # the run is complete: exit 0, so that scripts use its results
        click.echo(f"Interrupted by {intr.name} after the run finished; its results are in {out_dir} "
                   "(metrics.json, model.pt)", err=True)


def _valid_metric(config) -> str:
    return str(config.get("valid_metric", "recall@20")).lower()


def _report_interrupt(run, intr, trainer) -> None:
    """Mark ``run`` interrupted and print the one line that says how to continue it."""
    from graphrec.train.resume import RESUME_FILE

    done = trainer.loop.next_epoch if trainer is not None else int(run.status.get("epoch") or 0)
    run.write_status("interrupted", signal=intr.name)
    run.log(f"interrupted signal={intr.name} epochs_done={done}")
    if (run.path / RESUME_FILE).is_file():
        kept, batch = run.status.get("epoch"), int(run.status.get("batch") or 0)
        keeps = f"epoch {kept} and {batch} batch(es) of epoch {int(kept or 0) + 1}" if batch else f"epoch {kept}"
        msg = (f"Interrupted by {intr.name} after {done} epoch(s); {run.path} keeps {keeps}: "
               f"continue with 'graphrec fit --resume {run.path}'")
    else:
        msg = f"Interrupted by {intr.name} before the first evaluation; {run.path} holds nothing to resume"
    click.echo(msg, err=True)


# ----------------------------------------------------------------------------- evaluate
@click.command(context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--split", type=click.Choice(["valid", "test"]), default="test", show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), help="Evaluate on this folder instead of the training data (same ids).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override evaluation keys (topk, eval_batch_size, eval_item_chunk, eval_mask_valid_in_test, device, data_dir, dataset, missing_ratio, mask_file; a model may add its own, e.g. dgmrec_cold's cold_scoring), e.g. --set topk=[5,10].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@plugin_option
@trust_option
def evaluate(checkpoint, split, data_dir, sets, as_json, plugins, trust) -> None:
    """Evaluate a trained CHECKPOINT (model.pt or its run folder) with full ranking.

    A checkpoint that needs a plugin (a custom model or block) says which --plugin to pass;
    plugins are never imported from a checkpoint. The data must be the data it was trained on.
    """
    from graphrec.config import parse_set
    from graphrec.data.interactions import json_default
    from graphrec.eval.evaluator import Evaluator
    from graphrec.train.checkpoint import load_model
    from graphrec.train.trainer import groups_table

    _import_plugins(plugins)
    overrides = parse_set(sets)  # only evaluation keys (load_model checks them)
    if data_dir:
        overrides["data_dir"] = str(data_dir)
    model, dataset, payload = load_model(checkpoint, overrides=overrides, trust=trust)
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
