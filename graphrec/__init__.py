"""graphrec: a DGL graph-centric toolkit for multimodal recommendation with missing modalities."""

__version__ = "0.1.0"

from graphrec.errors import GraphrecError  # noqa: E402

__all__ = ["GraphrecError", "__version__"]
