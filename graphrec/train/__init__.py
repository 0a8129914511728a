"""Training: the trainer, callbacks, checkpoints and seeding."""

from graphrec.train.checkpoint import load_model, read_checkpoint, save_checkpoint
from graphrec.train.seed import resolve_device, set_seed
from graphrec.train.trainer import Callback, FitResult, Trainer

__all__ = ["Callback", "FitResult", "Trainer", "load_model", "read_checkpoint", "resolve_device", "save_checkpoint", "set_seed"]
