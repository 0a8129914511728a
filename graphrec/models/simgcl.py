"""SimGCL (Yu et al., SIGIR 2022): LightGCN with graph-free contrastive views from uniform noise."""

from __future__ import annotations

from typing import Any

import torch

from graphrec.blocks.perturbed import PerturbedPropagation
from graphrec.data.dataset import RecDataset
from graphrec.models.base import check_keys
from graphrec.models.contrastive import TwoViewContrastive, Views
from graphrec.registry import register_model


@register_model("simgcl")
class SimGCL(TwoViewContrastive):
    """SimGCL (SIGIR 2022): LightGCN plus InfoNCE between two views perturbed by uniform noise.

    ``n_layers`` LightGCN layers (mean of layers ``1..L``); two views add uniform noise
    of norm ``eps`` after every layer (:class:`~graphrec.blocks.perturbed.PerturbedPropagation`).

    Loss: BPR on the noise-free representations + ``cl_weight`` x (InfoNCE of the two views'
    users + InfoNCE of their items, over the batch's distinct users / positive items,
    temperature ``temp``) + ``reg_weight`` x L2 of the batch's ego embeddings.
    The layer is the block named by ``ui_block`` (slot ``ui_conv``).
    Shapes: :meth:`representations` -> ``(U, d), (N, d)``.
    """

    name = "simgcl"
    default_config = {
        "n_layers": 2,
        "eps": 0.1,
        "cl_weight": 0.2,
        "temp": 0.2,
        "reg_weight": 1e-4,
        # true: mean over layers 0..L (the DGMRec authors' re-implementation), false: 1..L (SimGCL)
        "ego_layer": False,
        "ui_block": "lightgcn_conv",
    }
    block_slots = {"ui_block": "ui_conv"}

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        check_keys("simgcl", config, non_negative=("eps",))
        super().__init__(dataset, config)
        self.propagation = PerturbedPropagation(int(config["n_layers"]), conv=self.make_block("ui_block"), ego=bool(config["ego_layer"]))
        self.eps = float(config["eps"])

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagation(self.graph, self.user_emb, self.item_emb)

    def views(self) -> Views:
        """Two independently perturbed encodings (fresh noise of norm ``eps`` after every layer)."""
        return tuple(self.propagation(self.graph, self.user_emb, self.item_emb, self.eps) for _ in range(2))  # type: ignore[return-value]
