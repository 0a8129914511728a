"""Shared base of the multimodal baselines (VBPR, FREEDOM, LATTICE): feature tables and their filling.

The DGMRec paper gives its multimodal baselines the missing features by NN-injection (its
footnote; Malitesta et al., CIKM 2024): a missing row is filled from the item's neighbours in the
co-interaction graph. graphrec's data key ``imputation`` (shared by every model and recorded in
every run's ``config.yaml``) selects the filling; these models default it to ``neigh_mean``
(:mod:`graphrec.data.imputation`), and ``--set imputation=mean`` / ``zeros`` / ``nn`` compare the others.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from graphrec.data.dataset import RecDataset
from graphrec.errors import GraphrecError
from graphrec.models.base import RecModel

#: the ``imputation`` the multimodal baselines default to (the DGMRec paper's NN-injection)
BASELINE_IMPUTATION = "neigh_mean"


class MultimodalBaseline(RecModel):
    """A :class:`RecModel` that reads the (filled) item features of every modality of the dataset.

    Attributes:
        modalities: modality names, in the dataset's order.
    The frozen ``(N, d_m)`` tables are buffers, read with :meth:`feature` (they move with the model).
    """

    default_config: dict[str, Any] = {"imputation": BASELINE_IMPUTATION}

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        label = self.name or type(self).__name__
        if not dataset.modalities:
            raise GraphrecError(f"{label} needs at least one modality feature file (<modality>_feat.npy)")
        self.modalities = list(dataset.modalities)
        super().__init__(dataset, config)
        for k, m in enumerate(self.modalities):
            x = torch.from_numpy(np.ascontiguousarray(dataset.features[m], dtype=np.float32))
            self.register_buffer(f"feat_{k}", x, persistent=False)

    def feature(self, m: str) -> torch.Tensor:
        """``(N, d_m)`` filled features of modality ``m``."""
        return getattr(self, f"feat_{self.modalities.index(m)}")
