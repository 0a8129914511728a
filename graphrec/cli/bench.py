"""``graphrec bench``: models over seeds under one of the papers' protocols."""

from __future__ import annotations

from pathlib import Path

import click

from graphrec.cli.common import (
    CONTEXT,
    _console,
    _import_plugins,
    all_plugins,
    check_writable_dir,
    plugin_option,
    run_plan,
)
from graphrec.errors import GraphrecError

BENCH_PROTOCOLS = ["missing", "new-items", "ratio-sweep", "ci2mg-sweep", "breakdown", "ablation", "retrieval", "natural"]


@click.command(context_settings=CONTEXT)
@click.option("--model", "models", multiple=True, required=True, help="Model to run (repeatable, in table order; ratios are relative to the first).")
@click.option("--protocol", type=click.Choice(BENCH_PROTOCOLS), default="missing", show_default=True, help="Evaluation protocol (see below).")
@click.option("--data-dir", type=click.Path(path_type=Path), help="MMRec-format folder. Default: the embedded synthetic dataset.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Config override for every run (repeatable).")
@click.option("--preset", "presets", multiple=True, metavar="MODEL=PATH", help="YAML config for one model's runs (repeatable), e.g. dgmrec=configs/dgmrec/tiktok.yaml.")
@click.option("--seeds", default="2024", show_default=True, help="Comma-separated seeds; each (model, variant) runs once per seed.")
@click.option("--epochs", type=click.IntRange(min=1), help="Maximum epochs of every run (overrides the presets; early stopping may end sooner).")
@click.option("--variant", "variants", multiple=True, help="Run only these variants of the protocol (repeatable), e.g. --variant 'w/o refinement'.")
@click.option("--out", type=click.Path(path_type=Path), help="Output folder (runs/, logs/, results.md, results.json, plots). Default: bench-out/<protocol>.")
@click.option("--threads", type=click.IntRange(min=0), default=None,
              help="torch/OpenMP threads of each run (config key threads; default 1, 0 = all CPUs the run may use); same as --set threads=N, and both with different values is an error.")
@click.option("--mask-seed", type=int, default=1225, show_default=True, help="Seed of the nested masks of ratio-sweep / ci2mg-sweep on a data folder.")
@click.option("--trainer", type=click.Choice(["shared", "model"]), default="shared", show_default=True,
              help="shared: every model gets the same trainer settings (lr, batch, epochs, patience, ...) unless a preset or --set names them; model: each model's own defaults.")
@click.option("--rerun-changed", is_flag=True, help="Run again the runs whose record in --out was made with other settings (old records move to runs/replaced/); without it such records are an error.")
@click.option("--dry-run", is_flag=True, help="List the runs (and which are done) without running anything.")
@click.option("--report-only", is_flag=True, help="Write results.md from the finished records of these runs; run nothing (e.g. while other runs go on).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@plugin_option
def bench(models, protocol, data_dir, sets, presets, seeds, epochs, variants, out, threads, mask_seed, trainer, rerun_changed, dry_run, report_only, quiet, plugins) -> None:
    """Benchmark MODELs under one protocol of the papers, over seeds; resumable.

    Every (model, variant, seed) trains in its own process (peak RSS per run) and writes
    OUT/runs/<model>__<variant>__seed<k>.json (config, test and group metrics, best epoch,
    seconds per epoch / evaluation / refinement, kNN build time, peak RSS). A run whose
    record exists is skipped, and a run in progress keeps its state after every epoch in
    OUT/logs/<id>.resume.pt, so an interrupted benchmark continues where it stopped, mid-run
    included (when the run's settings, data and graphrec version are unchanged; else it
    starts over and its log says why); a record made with other settings (epochs, --set,
    presets) is an error naming the keys (--rerun-changed runs it again). SIGTERM or Ctrl-C
    stops the running worker too (exit 143/130; finished records and resume states stay). OUT/results.md has mean ± std over seeds per model and
    variant with the trainer settings each row used, Recall/NDCG@20/50, paired significance
    tests over users against the first --model, and time and memory relative to it; PNG
    plots when matplotlib is installed. Every model gets the same trainer settings unless a
    preset or --set says otherwise (--trainer model keeps each model's own defaults).

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
    from graphrec.bench.runner import (
        changes_message,
        existing_changes,
        parse_presets,
        parse_seeds,
        plan,
        set_aside,
    )
    from graphrec.config import parse_set

    plugins = all_plugins(plugins)
    _import_plugins(plugins)
    models = list(models)
    out = out or Path("bench-out") / protocol
    if out.exists() and not out.is_dir():
        raise GraphrecError(f"--out '{out}' is a file, not a folder")
    if not dry_run:
        check_writable_dir(out)
    console = _console(quiet)
    p = plan(
        models, protocol, out, data_dir=str(data_dir) if data_dir else None, sets=parse_set(sets),
        presets=parse_presets(presets, models), seeds=parse_seeds(seeds), epochs=epochs,
        variants=list(variants) or None, plugins=plugins, threads=threads, mask_seed=mask_seed, write=not (dry_run or report_only),
        trainer=trainer,
    )
    from rich.markup import escape

    for note in p.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    changes = existing_changes(p)
    done = [s["id"] for s in p.specs if (out / "runs" / f"{s['id']}.json").is_file() and s["id"] not in changes]
    if dry_run:
        from graphrec.bench.resume import describe_position, saved_position, state_path

        for s in p.specs:
            state = "done" if s["id"] in done else ("other settings: " + ", ".join(changes[s["id"]]) if s["id"] in changes else "to run")
            partial = saved_position(state_path(out / "logs", s["id"])) if s["id"] not in done else None
            if partial is not None:  # the worker checks at start that the state is this run's
                state += f" (resumes after epoch {describe_position(*partial)})"
            click.echo(f"{s['id']}\t{state}")
        click.echo(f"{len(p.specs)} runs, {len(done)} done")
        return
    if changes and not rerun_changed:
        raise GraphrecError(changes_message(out, changes))
    if report_only:
        import json

        records = [json.loads((out / "runs" / f"{i}.json").read_text()) for i in done]
        if not records:
            raise GraphrecError(f"--report-only: no finished record of these runs in {out / 'runs'}")
        md, plots, _ = write_report(p, records, [])
        console.print(f"wrote {escape(str(md))} from {len(records)} of {len(p.specs)} runs" + (f", {', '.join(plots)}" if plots else ""))
        return
    if changes:
        moved = set_aside(p, list(changes))
        console.print(f"[yellow]note:[/] {len(changes)} record(s) made with other settings moved to {escape(str(moved))}; running them again")
    console.print(f"[bold]bench[/] protocol {protocol}: {len(p.specs)} runs ({len(done)} done) -> {out}")
    records, skipped, failed = run_plan(p, console, quiet, "bench")
    if skipped:
        console.print(f"skipped {len(skipped)} finished run(s) (records exist in {out / 'runs'})")
    md, plots, plot_note = write_report(p, records, failed)
    if plot_note:
        console.print(f"[yellow]note:[/] {escape(plot_note)}")
    console.print(f"wrote {md}" + (f", {', '.join(plots)}" if plots else ""))
    if failed:
        raise GraphrecError(f"{len(failed)} of {len(p.specs)} runs failed: {', '.join(failed)} (logs in {out / 'logs'})")
