"""Shared base of the multimodal baselines (VBPR, FREEDOM, LATTICE, BM3, MGCN): feature tables and their filling.

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
from torch import nn

from graphrec.data.catalogue import NewItems
from graphrec.data.dataset import RecDataset
from graphrec.errors import GraphrecError
from graphrec.models.base import RecModel

#: the ``imputation`` the multimodal baselines default to (the DGMRec paper's NN-injection)
BASELINE_IMPUTATION = "neigh_mean"


class MultimodalBaseline(RecModel):
    """A :class:`RecModel` that reads the (filled) item features of every modality of the dataset.

    Attributes:
        modalities: modality names, in the dataset's order.
    The ``(N, d_m)`` tables are read with :meth:`feature`; ``observed`` is the ``(N, M)`` bool mask of
    the modalities each item has (a buffer); they are buffers, or parameters trained
    with the model when the config key ``train_features`` is true (FREEDOM's and LATTICE's code
    fine-tune the feature tables; graphs built from the features at construction stay frozen).
    """

    default_config: dict[str, Any] = {"imputation": BASELINE_IMPUTATION}

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        label = self.name or type(self).__name__
        if not dataset.modalities:
            raise GraphrecError(f"{label} needs at least one modality feature file (<modality>_feat.npy)")
        self.modalities = list(dataset.modalities)
        super().__init__(dataset, config)
        observed = np.stack([~dataset.missing.missing[m] for m in self.modalities], axis=1)
        self.register_buffer("observed", torch.from_numpy(observed), persistent=False)  # (N, M) bool
        trainable = bool(config.get("train_features", False))
        for k, m in enumerate(self.modalities):
            x = torch.from_numpy(np.ascontiguousarray(dataset.features[m], dtype=np.float32))
            if trainable:
                self.register_parameter(f"feat_{k}", nn.Parameter(x.clone()))
            else:
                self.register_buffer(f"feat_{k}", x, persistent=False)

    def modality_weights(self, key: str = "mm_weights") -> dict[str, float]:
        """``{m: a_m}`` from the config key ``key``: ``null`` = equal weights, or a mapping
        ``{modality: weight}`` (weights >= 0, normalised to sum 1; modalities not named get 0)."""
        given = self.config.get(key)
        if given is None:
            return {m: 1.0 / len(self.modalities) for m in self.modalities}
        label = self.name or type(self).__name__
        if not isinstance(given, dict):
            raise GraphrecError(f"{label}: '{key}' must be null or a mapping {{modality: weight}}, got {given!r}")
        unknown = sorted(set(given) - set(self.modalities))
        if unknown:
            raise GraphrecError(f"{label}: '{key}' names {', '.join(map(str, unknown))}, not among the modalities {', '.join(self.modalities)}")
        try:
            w = {m: float(given.get(m, 0.0)) for m in self.modalities}
        except (TypeError, ValueError):
            raise GraphrecError(f"{label}: '{key}' weights must be numbers, got {given!r}") from None
        total = sum(w.values())
        if any(v < 0 for v in w.values()) or not total > 0:
            raise GraphrecError(f"{label}: '{key}' weights must be >= 0 with a positive sum, got {given!r}")
        return {m: v / total for m, v in w.items()}

    def feature(self, m: str) -> torch.Tensor:
        """``(N, d_m)`` filled features of modality ``m``."""
        return getattr(self, f"feat_{self.modalities.index(m)}")

    def modal_widths(self) -> dict[str, int]:
        """``{m: d_m}`` of the feature tables (models that score new items return it from ``feature_widths``)."""
        return {m: int(self.feature(m).shape[1]) for m in self.modalities}

    @torch.no_grad()
    def new_item_features(self, new: NewItems) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``{m: (n, d_m)}`` feature rows of items added after training, treated as the training rows were,
        and their ``(n, M)`` observed mask.

        Observed rows get the training ``feature_norm`` when it is row-wise (``none``, ``l2``); an
        unobserved row becomes the mean of the model's rows of the items that observe ``m``.
        """
        label = self.name or type(self).__name__
        norm = self.config.get("feature_norm", "none")
        methods = {m: norm.get(m, "none") for m in self.modalities} if isinstance(norm, dict) else {m: norm for m in self.modalities}
        dev = self.observed.device
        obs = torch.from_numpy(np.asarray(new.observed, dtype=bool)).to(dev)
        out = {}
        for j, m in enumerate(self.modalities):
            if methods[m] not in ("none", "l2"):
                raise GraphrecError(f"{label} scores new items only with feature_norm none or l2 (the run used {methods[m]!r} for '{m}')")
            x = torch.from_numpy(np.nan_to_num(np.asarray(new.features[m], dtype=np.float32))).to(dev)
            if methods[m] == "l2":
                x = torch.nn.functional.normalize(x, dim=1)
            table = self.feature(m).detach()
            has = self.observed[:, j]
            x[~obs[:, j]] = (table[has] if has.any() else table).mean(dim=0)
            out[m] = x
        return out, obs
