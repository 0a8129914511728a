"""Content-kNN baseline for items without training interactions (new / cold items).

LightGCN scores the items it was trained on. An item with no training interaction (a new item
of the new-item setting, or one added after training) is scored through its ``content_k``
nearest *old* items in feature space::

    z_new = Σ_{j ∈ kNN(new)} w_j z_j,   w_j = max(sim(new, j), 0) / Σ_l max(sim(new, l), 0)
    score(u, new) = <z_u, z_new> = Σ_j w_j score(u, j)

``sim`` is the cosine similarity of the raw features averaged over the modalities both items
observe (:func:`graphrec.graph.content.content_neighbours`); old items are those with a
training interaction. A new item sharing no observed modality with any old item gets the
mean of the old items' representations. Training is LightGCN's, unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from graphrec.data.catalogue import NewItems
from graphrec.data.dataset import RecDataset
from graphrec.errors import GraphrecError
from graphrec.graph.content import content_neighbours, neighbour_weights
from graphrec.models.base import Scorer
from graphrec.models.lightgcn import LightGCN
from graphrec.registry import register_model


@register_model("content_knn")
class ContentKNN(LightGCN):
    """LightGCN whose items without training interactions are scored by their nearest old items in feature space."""

    name = "content_knn"
    default_config = {**LightGCN.default_config, "content_k": 10}

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        if not dataset.modalities:
            raise GraphrecError("content_knn needs at least one modality feature file (<modality>_feat.npy)")
        super().__init__(dataset, config)
        self.content_k = int(config["content_k"])
        if self.content_k < 1:
            raise GraphrecError(f"'content_k' must be at least 1, got {self.content_k}")
        self.modalities = list(dataset.modalities)
        self._feats = {m: np.asarray(dataset.features[m], dtype=np.float32) for m in self.modalities}
        self._observed = np.stack([~dataset.missing.missing[m] for m in self.modalities], axis=1)
        counts = np.bincount(dataset.train[:, 1], minlength=dataset.n_items)
        self._old = counts > 0
        self._cold_neighbours: tuple[torch.Tensor, torch.Tensor] | None = None

    def feature_widths(self) -> dict[str, int]:
        return {m: int(x.shape[1]) for m, x in self._feats.items()}

    def _neighbours(self, feats: dict[str, np.ndarray], observed: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, k)`` nearest old items of query items in feature space and their weights."""
        idx, sim = content_neighbours(feats, observed, self._feats, self._observed, self.content_k, candidates=self._old)
        return idx, neighbour_weights(sim)

    def _transfer(self, item: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``(n, d)`` representations of query items from their nearest old items' rows of ``item``."""
        w = w.to(item.device, item.dtype)
        out = (w.unsqueeze(2) * item[idx.to(item.device)]).sum(dim=1)
        none = w.sum(dim=1) == 0
        if none.any():
            out[none] = item[torch.from_numpy(self._old).to(item.device)].mean(dim=0)
        return out

    @torch.no_grad()
    def scorer(self) -> Scorer:
        user, item = self.representations()
        cold = np.flatnonzero(~self._old)
        if len(cold):
            if self._cold_neighbours is None:  # features never change: one search, not one per evaluation
                self._cold_neighbours = self._neighbours({m: x[cold] for m, x in self._feats.items()}, self._observed[cold])
            item = item.clone()
            item[torch.from_numpy(cold).to(item.device)] = self._transfer(item, *self._cold_neighbours)
        return Scorer(user, item)

    @torch.no_grad()
    def new_item_representations(self, new: NewItems) -> torch.Tensor:
        _, item = self.representations()
        return self._transfer(item, *self._neighbours(new.features, new.observed))
