"""``graphrec recommend``: top-k lists of a trained model, written as TSV or JSON lines."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click
import numpy as np

from graphrec.cli.common import (
    CONTEXT,
    _console,
    _import_plugins,
    plugin_option,
    stage,
    trust_option,
)
from graphrec.errors import GraphrecError

#: ``--exclude`` choices -> the splits whose items a user's list leaves out
EXCLUDE = {"train": ("train",), "train+valid": ("train", "valid"), "all": ("train", "valid", "test"), "none": ()}
FORMATS = {".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def read_users(path: Path, n_users: int) -> np.ndarray:
    """User ids of ``path`` (one per line; blank lines and ``#`` comments skipped), first occurrences in order."""
    if not path.is_file():
        raise GraphrecError(f"--users file '{path}' does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (UnicodeDecodeError, OSError) as exc:
        raise GraphrecError(f"--users file '{path}' cannot be read as text ({type(exc).__name__})") from None
    ids: list[int] = []
    for no, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            u = int(text)
        except ValueError:
            raise GraphrecError(f"--users '{path}' line {no}: '{text[:40]}' is not an integer user id") from None
        if not 0 <= u < n_users:
            raise GraphrecError(f"--users '{path}' line {no}: user {u} is not a user of the model (valid ids 0..{n_users - 1})")
        ids.append(u)
    if not ids:
        raise GraphrecError(f"--users file '{path}' lists no user id")
    return np.asarray(list(dict.fromkeys(ids)), dtype=np.int64)


def output_format(out: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    return FORMATS.get(out.suffix.lower(), "tsv")


class _Progress:
    """A rich bar on a terminal, a plain line per ~10 % otherwise, nothing with --quiet."""

    def __init__(self, console, total: int, quiet: bool) -> None:
        self.console, self.total, self.quiet, self.done = console, total, quiet, 0
        self.bar = None
        self.next_line = 0.1
        if not quiet and console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TimeRemainingColumn,
            )

            self.bar = Progress("recommending", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console)
            self.task = self.bar.add_task("users", total=total)
            self.bar.start()

    def advance(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(self.task, advance=n)
        elif not self.quiet and self.total and self.done / self.total >= self.next_line:
            click.echo(f"recommend: {self.done}/{self.total} users ({100 * self.done // self.total} %)", err=True)
            self.next_line = math.floor(10 * self.done / self.total + 1) / 10

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@click.command(context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-k", "k", type=click.IntRange(min=1), default=20, show_default=True, help="Items per user.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output file (.tsv or .jsonl; see --format).")
@click.option("--users", "users_file", type=click.Path(path_type=Path), help="File of user ids, one per line (default: every user).")
@click.option("--exclude", type=click.Choice(list(EXCLUDE)), default="train+valid", show_default=True,
              help="Items left out of a user's list: those of the user's train (+valid, +test) interactions. "
                   "The default matches what 'graphrec evaluate' ranks on test.")
@click.option("--new-items", "new_items_dir", type=click.Path(path_type=Path),
              help="Folder of <modality>_feat.npy rows of items added after training (all-NaN row = modality missing); "
                   "they get ids N, N+1, ... and are ranked with the catalogue.")
@click.option("--format", "fmt", type=click.Choice(["tsv", "jsonl"]), help="Output format (default: from the --out extension; .jsonl/.ndjson = jsonl, else tsv).")
@click.option("--batch-size", type=click.IntRange(min=1), default=1024, show_default=True, help="Users scored at once (memory: batch x items scores).")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Rebuild the model on this folder instead of the training data (same ids).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--quiet", is_flag=True, help="No progress and no summary line.")
@plugin_option
@trust_option
def recommend(checkpoint, k, out, users_file, exclude, new_items_dir, fmt, batch_size, data_dir, overwrite, quiet, plugins, trust) -> None:
    """Write the top-K items of every user (or of --users) of a trained CHECKPOINT.

    \b
    TSV: a header 'user rank item score', then one line per (user, rank), rank 1 = best.
    JSON lines: one object per user, {"user": u, "items": [...], "scores": [...]}.
    Scores are the model's (those 'graphrec evaluate' ranks by); a user with fewer than K
    items left after --exclude gets a shorter list.

    \b
    Items added after training (--new-items DIR): DIR holds <modality>_feat.npy with one row
    per new item and the model's width; an all-NaN row (or an absent file) marks a missing
    modality. dgmrec, dgmrec_cold, content_knn, milk and sibrar can score them
    (docs/models/dgmrec.md); their ids in the output are N + row.

    \b
    Examples:
      graphrec recommend runs/dgmrec/model.pt -k 20 --out recs.tsv
      graphrec recommend runs/dgmrec/model.pt --users ids.txt --out recs.jsonl
      graphrec recommend runs/dgmrec_cold/model.pt --new-items new/ --out recs.tsv
    """
    from graphrec.data.catalogue import load_new_items
    from graphrec.data.interactions import atomic_writer
    from graphrec.train.checkpoint import load_model

    _import_plugins(plugins)
    console = _console(quiet)
    if out.exists() and out.is_dir():
        raise GraphrecError(f"--out '{out}' is a folder; give a file name such as recs.tsv")
    if out.exists() and not overwrite:
        raise GraphrecError(f"'{out}' exists; choose another --out or pass --overwrite")
    if new_items_dir is not None and not new_items_dir.is_dir():
        raise GraphrecError(f"--new-items folder '{new_items_dir}' does not exist")
    overrides = {"data_dir": str(data_dir)} if data_dir else None
    with stage(console, "loading the model"):
        model, dataset, payload = load_model(checkpoint, overrides=overrides, trust=trust)
    model.eval()
    users = read_users(users_file, model.n_users) if users_file else np.arange(model.n_users, dtype=np.int64)
    new = None
    if new_items_dir is not None:
        widths = model.feature_widths()
        if not widths:
            model.new_item_representations(None)  # raises the model's one-line error
        new = load_new_items(new_items_dir, widths)
    excl = dataset.interaction_matrix(EXCLUDE[exclude]) if EXCLUDE[exclude] else None
    kind = output_format(out, fmt)
    progress = _Progress(console, len(users), quiet)
    rows = 0
    try:
        with atomic_writer(out) as fh:
            if kind == "tsv":
                fh.write("user\trank\titem\tscore\n")
            for ub, items, scores in model.iter_recommend(users, k, excl, new, batch_size=batch_size,
                                                          item_chunk=int(payload["config"].get("eval_item_chunk", 0) or 0)):
                lines = []
                for u, it, sc in zip(ub.tolist(), items, scores):
                    keep = it >= 0
                    it, sc = it[keep].tolist(), sc[keep].tolist()
                    rows += len(it)
                    if kind == "tsv":
                        lines.extend(f"{u}\t{r}\t{i}\t{s:.6g}\n" for r, (i, s) in enumerate(zip(it, sc), 1))
                    else:
                        lines.append(json.dumps({"user": u, "items": it, "scores": [float(f"{s:.6g}") for s in sc]}) + "\n")
                fh.write("".join(lines))
                progress.advance(len(ub))
    finally:
        progress.close()
    if not quiet:
        extra = f"; new items have ids {model.n_items}..{model.n_items + new.n - 1}" if new is not None else ""
        click.echo(f"wrote {out}: {len(users)} users, {rows} rows ({kind}, excluding {exclude}){extra}", err=True)
    sys.stdout.flush()
