"""SIGINT during a backward pass is held back until the pass is done (graphrec.train.interrupt.backward).

An exception raised from a Python autograd function in the middle of ``loss.backward()`` leaves nodes in
torch's thread-local ready queue; their destructor runs after interpreter shutdown and deadlocks on the
GIL, so a fit that printed "Interrupted" never exited. The trainer runs every backward through
:func:`backward`, which delivers the signal only after the pass has finished.
"""

from __future__ import annotations

import os
import signal

import pytest
import torch

from graphrec.train.interrupt import Interrupted, backward, handle_signals


class _SignalInBackward(torch.autograd.Function):
    """Identity whose backward sends SIGINT to this process (a Ctrl-C arriving mid-backward)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        os.kill(os.getpid(), signal.SIGINT)
        return grad * 2.0


def _loss():
    w = torch.ones(3, requires_grad=True)
    h = _SignalInBackward.apply(w * 3.0)
    return w, (h * h).sum()


def test_signal_during_backward_is_raised_after_the_pass():
    w, loss = _loss()
    with handle_signals(), pytest.raises(Interrupted) as info:
        backward(loss)
    assert info.value.exit_code == 130
    # the whole pass ran: d/dw sum((3w)^2) through the x2 gradient of the function = 2 * 2 * 9 * w
    assert w.grad is not None
    torch.testing.assert_close(w.grad, torch.full((3,), 36.0))


def test_plain_backward_would_be_cut_short():
    """Without the guard the signal ends the pass inside the autograd function (what the guard prevents)."""
    w, loss = _loss()
    with handle_signals(), pytest.raises(Interrupted):
        loss.backward()
    assert w.grad is None


def test_second_signal_while_the_first_is_reported_is_ignored():
    from graphrec.train.interrupt import as_interrupted

    with handle_signals():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            raise AssertionError("SIGINT was not raised")
        except KeyboardInterrupt as exc:
            intr = as_interrupted(exc)
            os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C: must not escape the report
            reported = intr.name
    assert reported == "SIGINT"
    # a new run listens again
    with handle_signals(), pytest.raises(Interrupted):
        os.kill(os.getpid(), signal.SIGINT)
