"""``graphrec tune``: grid or random search over config keys, chosen on the validation metric only."""

from __future__ import annotations

from pathlib import Path

import click

from graphrec.cli.common import (
    CONTEXT,
    _console,
    _import_plugins,
    all_plugins,
    plugin_option,
    run_plan,
)
from graphrec.errors import GraphrecError


@click.command(context_settings=CONTEXT)
@click.argument("model")
@click.option("--space", type=click.Path(path_type=Path), required=True, help="YAML mapping key: [value, ...] of the config keys to search.")
@click.option("--search", type=click.Choice(["grid", "random"]), default="grid", show_default=True, help="Every combination, or --trials of them drawn at random.")
@click.option("--trials", type=click.IntRange(min=1), default=10, show_default=True, help="Combinations of a random search.")
@click.option("--search-seed", type=int, default=0, show_default=True, help="Seed of the random search's draw.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="MMRec-format folder. Default: the embedded synthetic dataset.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Config override for every trial (repeatable).")
@click.option("--config", "configs", multiple=True, type=click.Path(path_type=Path), help="YAML config for every trial (repeatable).")
@click.option("--seeds", default="2024", show_default=True, help="Comma-separated seeds; each trial runs once per seed (validation averaged).")
@click.option("--epochs", type=click.IntRange(min=1), help="Maximum epochs of every trial.")
@click.option("--out", type=click.Path(path_type=Path), help="Output folder (runs/, logs/, tune.md, tune.json). Default: tune-out/<model>.")
@click.option("--threads", type=click.IntRange(min=0), default=None,
              help="torch/OpenMP threads of each trial (config key threads; default 1, 0 = all CPUs the trial may use); same as --set threads=N, and both with different values is an error.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@plugin_option
def tune(model, space, search, trials, search_seed, data_dir, sets, configs, seeds, epochs, out, threads, quiet, plugins) -> None:
    """Search MODEL's config keys on validation; report the chosen trial's test metrics once.

    Each trial is a `graphrec bench` run (own process, record in OUT/runs/, resumable: a
    rerun skips finished trials and continues a trial in progress from its last epoch,
    OUT/logs/<id>.resume.pt). The choice uses the validation metric (valid_metric,
    mean over --seeds) alone. The DGMRec authors' code and MMRec keep the combination with
    the best test score instead, which makes test numbers optimistic.

    \b
    Example space.yaml:
      learning_rate: [0.001, 0.003]
      reg_weight: [0.0001, 0.01, 0.1]
    \b
      graphrec tune mfbpr --space space.yaml --data-dir data/tiktok --set missing_ratio=0.6
    """
    from rich.markup import escape

    from graphrec.bench.runner import changes_message, existing_changes, parse_seeds
    from graphrec.bench.tune import (
        combinations,
        read_space,
        select,
        tune_plan,
        write_tune_report,
    )
    from graphrec.config import parse_set

    plugins = all_plugins(plugins)
    _import_plugins(plugins)
    out = out or Path("tune-out") / model
    if out.exists() and not out.is_dir():
        raise GraphrecError(f"--out '{out}' is a file, not a folder")
    for c in configs:
        if not c.is_file():
            raise GraphrecError(f"config file '{c}' does not exist")
    combos = combinations(read_space(space), search, trials, search_seed)
    p = tune_plan(model, combos, out, data_dir=str(data_dir) if data_dir else None, sets=parse_set(sets),
                  presets={model: [str(c) for c in configs]}, seeds=parse_seeds(seeds), epochs=epochs,
                  plugins=plugins, threads=threads)
    changes = existing_changes(p)
    if changes:
        raise GraphrecError(changes_message(out, changes).replace("--rerun-changed", "a new --out"))
    console = _console(quiet)
    console.print(f"[bold]tune[/] {escape(model)}: {len(combos)} trial(s) x {len(p.seeds)} seed(s) -> {escape(str(out))}")
    records, _, failed = run_plan(p, console, quiet, "tune")
    result = select(p, records)
    md = write_tune_report(p, model, result, failed)
    if result["chosen"]:
        test = ", ".join(f"{k} {v:.4f}" for k, v in result["test"].items() if k in ("recall@20", "ndcg@20", "recall@50", "ndcg@50"))
        console.print(f"chosen on validation {result['metric']} {result['chosen']['valid']:.4f}: "
                      f"{escape(result['chosen']['trial'])}; test {test}")
    console.print(f"wrote {escape(str(md))}")
    if failed:
        raise GraphrecError(f"{len(failed)} trial run(s) failed: {', '.join(failed)} (logs in {out / 'logs'})")
