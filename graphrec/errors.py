"""User-facing errors and warnings.

Every problem a user can fix (bad files, bad config, unknown names) is raised as a
:class:`GraphrecError` whose message is one line saying what is wrong and how to fix
it. The CLI prints that line and exits with status 2; it never shows a traceback.
Suspicious but usable input is a :class:`GraphrecWarning` (``warnings.warn``), which the
CLI prints as one ``warning: ...`` line. :func:`os_error_line` and :func:`check_writable_dir`
turn file-system errors on user-given paths into such lines.
"""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path


class GraphrecError(ValueError):
    """A one-line, user-fixable error (malformed input, unknown name, bad config)."""


class GraphrecWarning(UserWarning):
    """Input that works but is probably not what the user meant (one line, shown by the CLI)."""


def os_error_line(exc: OSError) -> str:
    """One line for a file-system error: what failed, on which path (e.g. a read-only or missing folder)."""
    what = exc.strerror or type(exc).__name__
    where = f" '{exc.filename}'" + (f" -> '{exc.filename2}'" if exc.filename2 else "") if exc.filename else ""
    hint = {errno.EACCES: "; choose a folder you can write to", errno.EPERM: "; choose a folder you can write to",
            errno.EROFS: "; choose a writable folder", errno.ENOSPC: "; free some space or choose another folder",
            errno.ENOTDIR: "; a part of the path is a file, not a folder"}.get(exc.errno or 0, "")
    return f"{what}:{where}{hint}" if where else f"{what} ({exc}){hint}"


def check_writable_dir(folder: Path, what: str = "output folder") -> None:
    """Create ``folder`` (with parents) and check a file can be written there; a one-line error otherwise.

    Run before long work, so that an unwritable --out fails at once, not after hours.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".graphrec-write-check"):
            pass
    except OSError as exc:
        raise GraphrecError(f"cannot write to {what} '{folder}': {os_error_line(exc)}") from None
