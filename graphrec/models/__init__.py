"""Models, registered by name in :data:`graphrec.registry.MODELS`."""

from graphrec.models.base import RecModel, Scorer
from graphrec.models.bm3 import BM3
from graphrec.models.ci2mg import CI2MG
from graphrec.models.content_knn import ContentKNN
from graphrec.models.damrs import DAMRS
from graphrec.models.dgmrec import DGMRec
from graphrec.models.dgmrec_cold import DGMRecCold
from graphrec.models.freedom import FREEDOM
from graphrec.models.grcn import GRCN
from graphrec.models.gume import GUME
from graphrec.models.lattice import LATTICE
from graphrec.models.lgmrec import LGMRec
from graphrec.models.lightgcn import LightGCN
from graphrec.models.mfbpr import MFBPR
from graphrec.models.mgcn import MGCN
from graphrec.models.milk import MILK
from graphrec.models.mmgcn import MMGCN
from graphrec.models.ngcf import NGCF
from graphrec.models.sgl import SGL
from graphrec.models.sibrar import SiBraR
from graphrec.models.simgcl import SimGCL
from graphrec.models.slmrec import SLMRec
from graphrec.models.vbpr import VBPR

__all__ = ["BM3", "CI2MG", "ContentKNN", "DAMRS", "DGMRec", "DGMRecCold", "FREEDOM", "GRCN", "GUME", "LATTICE", "LGMRec", "LightGCN", "MFBPR", "MGCN", "MILK", "MMGCN", "NGCF", "RecModel", "SGL", "SiBraR", "Scorer", "SimGCL", "SLMRec", "VBPR"]
