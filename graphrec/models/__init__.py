"""Models, registered by name in :data:`graphrec.registry.MODELS`."""

from graphrec.models.base import RecModel, Scorer
from graphrec.models.lightgcn import LightGCN
from graphrec.models.mfbpr import MFBPR

__all__ = ["LightGCN", "MFBPR", "RecModel", "Scorer"]
