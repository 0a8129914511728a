"""Shared pieces of the ``graphrec`` command modules: the error group, the console, options and helpers."""

from __future__ import annotations

import contextlib
import time
import warnings
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from graphrec.errors import (  # noqa: F401 (re-exported)
    GraphrecError,
    GraphrecWarning,
    check_writable_dir,
    os_error_line,
)

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:  # one line, no usage block
        click.echo(f"Error: {self.format_message()}", err=True)


@contextlib.contextmanager
def _one_line_warnings():
    """While a command runs, every :class:`GraphrecWarning` is shown as one ``warning: ...`` line."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", GraphrecWarning)
        default_show = warnings.showwarning

        def show(message, category, *args, **kwargs):
            if issubclass(category, GraphrecWarning):
                click.echo(f"warning: {message}", err=True)
            else:
                default_show(message, category, *args, **kwargs)

        warnings.showwarning = show
        yield


def _one_line_usage(exc: click.UsageError) -> click.ClickException:
    """A click usage error as one ``Error:`` line pointing at ``--help`` (help requests stay as they are)."""
    if isinstance(exc, getattr(click.exceptions, "NoArgsIsHelpError", ())) or exc.ctx is None:
        return exc
    return UserError(f"{exc.format_message().rstrip('.')} (see '{exc.ctx.command_path} --help')")


class GraphrecGroup(click.Group):
    """Turns :class:`GraphrecError`, usage and file-system errors into one-line exit-2 errors, and
    shows :class:`GraphrecWarning` s as one ``warning: ...`` line each."""

    def invoke(self, ctx: click.Context):
        ctx.with_resource(_one_line_warnings())
        try:
            return super().invoke(ctx)
        except GraphrecError as exc:
            raise UserError(str(exc)) from None
        except KeyboardInterrupt:
            raise UserError("interrupted") from None
        except click.UsageError as exc:  # a bad option value of a subcommand: one line too
            raise _one_line_usage(exc) from None
        except BrokenPipeError:
            raise
        except OSError as exc:  # unwritable --out, a file where a folder should be, a full disk ...
            raise UserError(os_error_line(exc)) from None

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:  # the group's own options (graphrec --bogus)
            raise _one_line_usage(exc) from None


STAGE_ANNOUNCE_SECONDS = 2.0


@contextlib.contextmanager
def stage(console: Console, text: str, announce_after: float | None = None):
    """A long step: a spinner on a terminal. Elsewhere (redirected, nohup, batch jobs), once the step
    has taken ``announce_after`` seconds (default :data:`STAGE_ANNOUNCE_SECONDS`), a plain line
    ``text ...``, and ``text: done in 12.3s`` when it then succeeds, so a log shows what is running
    and where the time went. Quick steps print nothing (so an error stays a single line)."""
    if console.is_terminal:
        with console.status(text):
            yield
        return
    import threading

    t0 = time.perf_counter()
    wait = STAGE_ANNOUNCE_SECONDS if announce_after is None else announce_after
    announced = threading.Event()

    def announce() -> None:
        announced.set()
        console.print(f"{text} ...", markup=False, highlight=False, soft_wrap=True)

    timer = threading.Timer(wait, announce)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()
    if announced.is_set():
        console.print(f"{text}: done in {time.perf_counter() - t0:.1f}s", markup=False, highlight=False, soft_wrap=True)


def _console(quiet: bool = False) -> Console:
    return Console(stderr=True, quiet=quiet)


PLUGIN_HELP = (
    "Import this module or .py file first (repeatable; the current directory is importable; absolute and ../ "
    "paths work), e.g. --plugin examples.attention_block to register custom blocks or models."
)


def plugin_option(f):
    """The ``--plugin MODULE`` option (repeatable) of the group and of several commands."""
    return click.option("--plugin", "plugins", multiple=True, metavar="MODULE", help=PLUGIN_HELP)(f)


TRUST_HELP = (
    "Load a checkpoint that holds pickled Python objects (one written by an earlier graphrec) the old "
    "way, which can run code: only for files you trust. 'graphrec checkpoint convert' re-saves one as plain data."
)


def trust_option(f):
    """The ``--trust-checkpoint`` flag of every command that reads a checkpoint."""
    return click.option("--trust-checkpoint", "trust", is_flag=True, help=TRUST_HELP)(f)


def _import_plugins(plugins: tuple[str, ...]) -> None:
    from graphrec.registry import import_plugins

    import_plugins(plugins)


def all_plugins(plugins: tuple[str, ...]) -> tuple[str, ...]:
    """The group's ``graphrec --plugin`` modules followed by the command's, without repeats (what a
    child process, a bench worker or a distributed rank, must import again)."""
    root = click.get_current_context().find_root().params.get("plugins") or ()
    return tuple(dict.fromkeys((*root, *plugins)))


def _prepare_out(out: Path | None, model: str, dataset: str, overwrite: bool) -> Path:
    if out is None:
        out = Path("runs") / f"{model}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and not out.is_dir():
        raise GraphrecError(f"--out '{out}' is a file, not a folder")
    try:
        not_empty = out.is_dir() and any(out.iterdir())
    except OSError as exc:
        raise GraphrecError(f"cannot read output folder '{out}': {os_error_line(exc)}") from None
    if not_empty and not overwrite:
        raise GraphrecError(f"output folder '{out}' is not empty; choose another --out or pass --overwrite")
    check_writable_dir(out)
    return out


def _group_metrics(topk: list[int]) -> tuple[str, str]:
    """Columns of the per-group table: recall/ndcg at 20, or at the largest computed K."""
    k = 20 if 20 in topk else max(topk)
    return (f"recall@{k}", f"ndcg@{k}")


def resolve_model_config(model: str, config_files: tuple[str, ...], sets: tuple[str, ...], **direct: Any) -> dict:
    from graphrec.config import parse_set, resolve_config
    from graphrec.registry import BLOCKS, MODELS, load_builtin

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




def run_plan(p, console, quiet: bool, command: str):
    """``run_all(p)`` for ``bench`` and ``tune``; SIGINT/SIGTERM end the command with one line and exit
    130/143 (the running worker is stopped and writes no record; finished records stay)."""
    from graphrec.bench.runner import run_all
    from graphrec.train.interrupt import as_interrupted

    try:
        return run_all(p, console, progress=not quiet)
    except KeyboardInterrupt as exc:
        intr = as_interrupted(exc)
        n = sum(1 for s in p.specs if (p.out / "runs" / f"{s['id']}.json").is_file())
        click.echo(f"{command} interrupted (signal {intr.signum}, {intr.name}); {n} of {len(p.specs)} runs finished in "
                   f"{p.out / 'runs'}; the same command resumes (a run in progress from its last epoch)", err=True)
        raise SystemExit(intr.exit_code) from None
