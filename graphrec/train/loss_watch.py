"""A warning when one term of the training objective runs away.

Models log their loss terms per epoch (``bpr``, ``recon``, ...: the history rows of
:class:`~graphrec.train.trainer.Trainer`). :class:`LossTermWatch` keeps, per term, the smallest
absolute value since the first epoch and warns once (a :class:`~graphrec.errors.GraphrecWarning`,
one ``warning: ...`` line in the CLI) when a later epoch's value is both above ``floor`` and more
than ``factor`` (10) times that minimum: a part of the objective that grows by an order of
magnitude or more while the run goes on. The trainer adds one on the main process.

The thresholds (10x and 1.0) were set against 401 recorded runs of 20 models (bench records of
``docs/results.md``): they fire on the 6 DGMRec runs whose reconstruction term ran away on ML-100K
and TikTok (0.008 -> 1.0-276; ``docs/models/dgmrec.md``, "Reading the loss curves") and on one
CI2MG run on TikTok whose reconstruction term went 4.6 -> 57 (a converged CI2MG run later went
1.47 -> 94 at epoch 113; ``docs/models/ci2mg.md``), and on no other term of any model (at 100x
the CI2MG runs were missed). A model explains its own terms in ``loss_term_hints``
(``{term: what it means and what to do}``); other terms get a generic hint.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from graphrec.errors import GraphrecWarning
from graphrec.train.trainer import Callback

#: history keys that are not loss terms
NOT_TERMS = ("epoch", "seconds", "loss")
GENERIC_HINT = "a part of the objective is diverging; check the learning rate and this term's weight"


class LossTermWatch(Callback):
    """Warn once per loss term whose value grows past ``floor`` and ``factor`` x its smallest |value| so far.

    Args:
        factor: growth over the running minimum of ``|value|`` that counts as running away.
        floor: values at or below this never warn (tiny terms may grow by large factors harmlessly).
    """

    def __init__(self, factor: float = 10.0, floor: float = 1.0) -> None:
        self.factor, self.floor = float(factor), float(floor)
        self.low: dict[str, tuple[float, int]] = {}  # term -> (smallest |value|, its epoch)
        self.warned: set[str] = set()

    def on_train_start(self, trainer) -> None:
        # a resumed run: replay the recorded epochs, so that the minimum is the whole run's (no warning
        # repeats one the interrupted process gave)
        self.low.clear()
        self.warned.clear()
        for record in trainer.loop.history:
            self.observe(record, trainer.model, quiet=True)

    def on_epoch_logged(self, trainer, epoch: int, record: dict[str, Any], evaluated: bool, improved: bool) -> None:
        self.observe(record, trainer.model)

    def observe(self, record: dict[str, Any], model=None, quiet: bool = False) -> list[str]:
        """Take one history row (``{"epoch": e, term: value, ...}``); returns the terms that ran away at it."""
        epoch = int(record.get("epoch", 0))
        fired = []
        for term, value in record.items():
            if term in NOT_TERMS or term.startswith("valid_") or not isinstance(value, (int, float)):
                continue
            size = abs(float(value))
            if math.isnan(size):  # the trainer stops on a non-finite loss itself
                continue
            low = self.low.get(term)
            if low is not None and term not in self.warned and size > self.floor and size > self.factor * max(low[0], 1e-12):
                self.warned.add(term)
                fired.append(term)
                if not quiet:
                    hint = getattr(model, "loss_term_hints", {}).get(term, GENERIC_HINT)
                    warnings.warn(
                        f"loss term '{term}' rose from {low[0]:.3g} (epoch {low[1]}) to {size:.3g} (epoch {epoch}), "
                        f"over {self.factor:g}x: {hint}",
                        GraphrecWarning,
                        stacklevel=2,
                    )
            if low is None or size < low[0]:
                self.low[term] = (size, epoch)
        return fired
