"""SIGINT/SIGTERM during training: an :class:`Interrupted` exception, never in the middle of a checkpoint.

:func:`handle_signals` turns SIGINT (Ctrl-C) and SIGTERM (``kill``, batch-job time limits) into
:class:`Interrupted` for the duration of a run; inside :func:`critical` (the writes of one checkpoint)
a signal is held back and raised when the block ends, so the run folder is never left half-written.
:func:`backward` runs ``loss.backward()`` the same way: an exception raised from a Python autograd
function in the middle of a backward pass leaves nodes in torch's thread-local ready queue, whose
destructor then runs after the interpreter has shut down and waits forever for the GIL (a fit that
printed "Interrupted" and never exited).
Exit codes follow the shell's convention: ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

_state = {"depth": 0, "pending": None, "handling": False}


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when SIGINT or SIGTERM arrives during a run."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _handler(signum, frame) -> None:
    if _state["handling"]:  # a second Ctrl-C (or timeout's forwarded copy) while the first is reported
        return
    if _state["depth"] > 0:
        _state["pending"] = signum
        return
    raise Interrupted(signum)


@contextmanager
def handle_signals() -> Iterator[None]:
    """Raise :class:`Interrupted` on SIGINT/SIGTERM inside the block (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state["handling"] = False
    previous = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def critical() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back until the block is done, then raise :class:`Interrupted` for it."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        pending = _state["pending"]
        if _state["depth"] == 0 and pending is not None:
            _state["pending"] = None
            raise Interrupted(pending)


def backward(loss) -> None:
    """``loss.backward()`` with SIGINT/SIGTERM held back until it returns (see the module docstring)."""
    with critical():
        loss.backward()


def as_interrupted(exc: BaseException) -> Interrupted:
    """A plain ``KeyboardInterrupt`` (no handler installed) counts as SIGINT.

    Called first by every handler of an interrupt: from then on, until :func:`handle_signals` is entered
    again, further SIGINT/SIGTERM are ignored, so that the one-line report and the run folder's status
    are written whole (a second Ctrl-C, or the copy that ``timeout`` forwards, used to cut them short and
    print "no run folder was written" for a folder that was).
    """
    _state["handling"] = True
    return exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
