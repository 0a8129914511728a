"""``graphrec models`` and ``graphrec blocks``: what the registries hold."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from graphrec.cli.common import (
    CONTEXT,
    _import_plugins,
    plugin_option,
)


@click.command(context_settings=CONTEXT)
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


@click.command(context_settings=CONTEXT)
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
