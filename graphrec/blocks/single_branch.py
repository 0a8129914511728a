"""SiBraR's single-branch embedding network (Ganhör et al., RecSys 2024): one network for every modality.

Every input (the item ID embedding, each content modality) is first brought to width ``d`` by its own
linear projection (none for inputs already ``d`` wide and declared with width ``None``), then the
*same* branch ``g`` embeds it:

    e_m = g(P_m x_m),    g(h) = W_2 relu(W_1 h + b_1) + b_2      (W_1, W_2: d × d, shared by all modalities)

so all modalities land in one space and any subset of them can be averaged into an item embedding.
"""

from __future__ import annotations

import torch
from torch import nn

from graphrec.blocks.encoders import xavier_linear
from graphrec.registry import register_block


@register_block("single_branch")
class SingleBranch(nn.Module):
    """Per-input projections ``P_m`` and the shared branch ``g`` (:meth:`embed`).

    Args:
        widths: ``{name: d_m}``; ``None`` for an input that is already ``(n, d)`` (no projection).
        d: embedding width.
        dropout: dropout on the branch input (training only; the DGMRec authors use 0).

    Shapes: ``forward({name: (n, d_m)})`` -> ``{name: (n, d)}``; :meth:`embed` ``(n, d)`` -> ``(n, d)``.
    """

    relations = ()

    def __init__(self, widths: dict[str, int | None], d: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.projections = nn.ModuleDict({m: xavier_linear(w, d) for m, w in widths.items() if w is not None})
        self.branch = nn.Sequential(nn.Dropout(dropout), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))

    def embed(self, h: torch.Tensor) -> torch.Tensor:
        """The shared branch ``g`` on ``(n, d)`` inputs."""
        return self.branch(h)

    def project(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """``P_name x`` (``x`` itself for an input without projection)."""
        return self.projections[name](x) if name in self.projections else x

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: self.embed(self.project(m, x)) for m, x in inputs.items()}
