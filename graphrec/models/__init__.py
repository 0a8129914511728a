"""Models, registered by name in :data:`graphrec.registry.MODELS`."""

from graphrec.models.base import RecModel, Scorer
from graphrec.models.ci2mg import CI2MG
from graphrec.models.dgmrec import DGMRec
from graphrec.models.lightgcn import LightGCN
from graphrec.models.mfbpr import MFBPR

__all__ = ["CI2MG", "DGMRec", "LightGCN", "MFBPR", "RecModel", "Scorer"]
