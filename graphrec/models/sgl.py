"""SGL (Wu et al., SIGIR 2021), edge-dropout variant SGL-ED: LightGCN + contrast of two dropped graphs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from graphrec.blocks.edge_dropout import EdgeDropout, view_from_pairs, view_pairs
from graphrec.blocks.lightgcn import LightGCNPropagation
from graphrec.data.dataset import RecDataset
from graphrec.models.base import check_keys
from graphrec.models.contrastive import TwoViewContrastive, Views
from graphrec.registry import register_model

if TYPE_CHECKING:  # pragma: no cover
    from graphrec.train.trainer import Trainer


@register_model("sgl")
class SGL(TwoViewContrastive):
    """SGL-ED (SIGIR 2021): LightGCN plus InfoNCE between two edge-dropout views of the graph.

    LightGCN (mean of layers ``0..L``) on the full graph for the recommendation loss;
    two views of the graph, each keeping ``1 - drop_ratio`` of the interactions
    (:class:`~graphrec.blocks.edge_dropout.EdgeDropout`, redrawn every epoch), for the
    self-supervised loss.

    Loss: BPR + ``cl_weight`` x (InfoNCE of the views' users + of their items, over the batch's
    distinct users / positive items, temperature ``temp``) + ``reg_weight`` x L2 of the batch's
    ego embeddings. The layer is the block named by ``ui_block`` (slot ``ui_conv``).
    Shapes: :meth:`representations` -> ``(U, d), (N, d)``.
    """

    name = "sgl"
    default_config = {
        "n_layers": 3,
        "drop_ratio": 0.1,
        "cl_weight": 0.1,
        "temp": 0.2,
        "reg_weight": 1e-4,
        "ui_block": "lightgcn_conv",
    }
    block_slots = {"ui_block": "ui_conv"}

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        check_keys("sgl", config, unit=("drop_ratio",))
        super().__init__(dataset, config)
        self.propagation = LightGCNPropagation(int(config["n_layers"]), conv=self.make_block("ui_block"))
        self.dropout = EdgeDropout()
        self.keep = 1.0 - float(config["drop_ratio"])
        self.graph_views = (self.graph, self.graph)

    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None:
        """Draw the epoch's two edge-dropped views (SGL redraws them every epoch)."""
        self.graph_views = (self.dropout(self.graph, self.keep), self.dropout(self.graph, self.keep))

    def get_epoch_state(self) -> Any:
        """The epoch's two views as their kept (user, item) pairs (``None`` before the first epoch)."""
        if self.graph_views[0] is self.graph:
            return None
        return {"views": [view_pairs(g) for g in self.graph_views]}

    def set_epoch_state(self, state: Any) -> None:
        if state is not None:
            self.graph_views = tuple(view_from_pairs(p, self.graph) for p in state["views"])  # type: ignore[assignment]

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagation(self.graph, self.user_emb, self.item_emb)

    def views(self) -> Views:
        """LightGCN on each of the epoch's two edge-dropped graphs."""
        return tuple(self.propagation(g, self.user_emb, self.item_emb) for g in self.graph_views)  # type: ignore[return-value]
