"""``graphrec checkpoint convert``: re-save a trusted checkpoint of an earlier graphrec as plain data."""

from __future__ import annotations

import io
from pathlib import Path

import click

from graphrec.cli.common import CONTEXT, GraphrecGroup
from graphrec.errors import GraphrecError


@click.group(cls=GraphrecGroup, context_settings=CONTEXT)
def checkpoint() -> None:
    """Checkpoint tools."""


@checkpoint.command("convert", context_settings=CONTEXT)
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Where to write the converted model.pt. Default: replace PATH (the original is kept as PATH.orig).")
def checkpoint_convert(path, out) -> None:
    """Load PATH (a model.pt or its run folder) trusting its pickle, and write it as plain data.

    Only for checkpoints you trust (e.g. written by an earlier graphrec): loading one the old
    way can run code. The result loads with torch.load(weights_only=True), as every command
    now requires.
    """
    import torch

    from graphrec.data.interactions import atomic_write_bytes
    from graphrec.train.checkpoint import read_checkpoint, to_plain

    src = path / "model.pt" if path.is_dir() else path
    payload = read_checkpoint(src, trust=True)
    try:
        plain = to_plain(payload)
    except TypeError as exc:
        raise GraphrecError(f"{src}: cannot be converted: {exc}") from None
    buf = io.BytesIO()
    torch.save(plain, buf)
    dest = out or src
    if out is None:
        backup = src.with_name(src.name + ".orig")
        if backup.exists():
            raise GraphrecError(f"'{backup}' exists; move it away or pass --out")
        atomic_write_bytes(backup, src.read_bytes())
    atomic_write_bytes(dest, buf.getvalue())
    read_checkpoint(dest)  # loads without trust now
    click.echo(f"wrote {dest} (plain data; loads without --trust-checkpoint)" + ("" if out else f"; original kept as {src.name}.orig"))
