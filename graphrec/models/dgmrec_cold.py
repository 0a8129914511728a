"""``dgmrec_cold``: DGMRec plus a content-to-representation head for items without interactions.

Beyond the paper (off unless this model is chosen; ``dgmrec`` keeps the paper's behaviour).
DGMRec gives an item without training users a preference gate ``ρ = 0`` and an untrained ID
embedding, so a new item's fused representation is small and it never reaches a top-20 list
(docs/results.md). ``dgmrec_cold`` trains, beside an unchanged DGMRec, a head ``h``
(:class:`graphrec.blocks.content_head.ContentHead`) that maps an item's own modality
encodings to DGMRec's final item space, in the spirit of DropoutNet / CLCRec's
content-to-ID training on warm items::

    c_i = h([sg(g_{i,m}); sg(s_{i,m})]_{m})                     (encodings of observed or generated x_{i,m})
    L_cold = BPR(<sg(z_u), c_p>, <sg(z_u), c_n>) + cold_mse · ||c_p − sg(z_p)||² / d   (batch mean)
    L = L_DGMRec + cold_weight · L_cold

``sg`` is stop-gradient: the cold loss trains only ``h``, so DGMRec's parameters follow the
same trajectory as plain ``dgmrec`` with the same seed (the head's initialisation draws from
a forked RNG). At scoring time every item with no training interaction (the new items of the
new-item setting; items added after training, ``graphrec recommend --new-items``) scores

    score(u, i) = <z_u, c_i> + β

and the others keep DGMRec's ``<z_u, z_i>``. The offset ``β`` is chosen on the validation
split before every evaluation (:meth:`DGMRecCold.calibrate`, :mod:`graphrec.models.cold_offset`):
the one giving new items the most room while the old items' validation Recall@20 stays within
``cold_tolerance`` (2 %) of plain DGMRec's; it is saved with the weights.
``cold_scoring: false`` scores every item as plain DGMRec does, with the same weights
(``graphrec evaluate CKPT --set cold_scoring=false``). A new item's missing modalities are
generated as DGMRec generates them (written into the raw table before evaluation in the
new-item setting; :func:`graphrec.models.dgmrec_new_items.complete_features` for items added
later); items missing every modality use the mean-imputed rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from graphrec.blocks.bpr import bpr_loss
from graphrec.blocks.content_head import ContentHead
from graphrec.data.catalogue import NewItems
from graphrec.data.dataset import RecDataset
from graphrec.data.sampler import BPRBatch
from graphrec.errors import GraphrecError
from graphrec.models.cold_offset import choose_offset, with_offset
from graphrec.models.base import Scorer
from graphrec.models.dgmrec import DGMRec
from graphrec.registry import register_model

@register_model("dgmrec_cold")
class DGMRecCold(DGMRec):
    """DGMRec with a content head scoring items that have no training interaction (beyond the paper)."""

    name = "dgmrec_cold"
    #: config keys ``graphrec evaluate --set`` may change besides the shared evaluation keys
    eval_keys = ("cold_scoring",)
    default_config: dict[str, Any] = {
        **DGMRec.default_config,
        "cold_weight": 1.0,
        "cold_mse": 1.0,
        "cold_hidden": 256,
        # score items without interactions with the head (false: plain DGMRec's scores, same weights)
        "cold_scoring": True,
        # choose the score offset of those items on the validation split before every evaluation:
        # the most exposure of new items that keeps the old items' validation Recall@20 within
        # this relative loss of plain DGMRec's
        "cold_calibration": True,
        "cold_tolerance": 0.02,
    }

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        super().__init__(dataset, config)
        if int(config["cold_hidden"]) < 1:
            raise GraphrecError(f"'cold_hidden' must be at least 1, got {config['cold_hidden']}")
        if not 0.0 <= float(config["cold_tolerance"]) <= 1.0:
            raise GraphrecError(f"'cold_tolerance' must be in [0, 1], got {config['cold_tolerance']}")
        d = self.embedding_size
        with torch.random.fork_rng(devices=[]):  # DGMRec's own random draws stay those of plain dgmrec
            torch.manual_seed(int(config.get("seed", 2024)) + 7919)
            self.cold_head = ContentHead(2 * len(self.modalities) * d, d, int(config["cold_hidden"]))
        counts = np.bincount(dataset.train[:, 1], minlength=dataset.n_items)
        self.register_buffer("cold_items", torch.from_numpy(counts == 0), persistent=False)
        self.register_buffer("cold_offset", torch.zeros(()))  # β, saved with the weights
        self._last: dict[str, Any] | None = None

    def _content(self, g: dict[str, torch.Tensor], s: dict[str, torch.Tensor], rows=None) -> torch.Tensor:
        parts = []
        for m in self.modalities:
            gm, sm = g[m].detach(), s[m].detach()
            parts += [gm if rows is None else gm[rows], sm if rows is None else sm[rows]]
        return self.cold_head(torch.cat(parts, dim=1))

    def propagate(self, graph, fuse: bool = True):
        out = super().propagate(graph, fuse=fuse)
        self._last = out
        return out

    def loss(self, batch: BPRBatch) -> dict[str, torch.Tensor]:
        losses = super().loss(batch)
        f, self._last = self._last, None
        w = float(self.config["cold_weight"])
        if w > 0 and f is not None:
            with torch.no_grad():  # the loss propagates without step 6: fuse the batch's rows only
                u, p, mods = batch.users, batch.pos, self.modalities
                zu = self.fusion(f["ue"][u], {m: f["GU"][m][u] for m in mods}, {m: f["SU"][m][u] for m in mods})
                zi_p = self.fusion(f["ie"][p], {m: f["G"][m][p] for m in mods}, {m: f["S"][m][p] for m in mods})
            c_p = self._content(f["g"], f["s"], batch.pos)
            c_n = self._content(f["g"], f["s"], batch.neg)
            cold = bpr_loss((zu * c_p).sum(1), (zu * c_n).sum(1))
            cold = cold + float(self.config["cold_mse"]) * F.mse_loss(c_p, zi_p)
            losses["cold"] = w * cold
            losses["loss"] = losses["loss"] + losses["cold"]
        return losses

    def _scoring(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z_u, z_i, c)``: DGMRec's user and item representations and the head's rows of cold items."""
        out = self.propagate(self.infer_graph)
        self._last = None
        rows = torch.nonzero(self.cold_items).squeeze(1)
        return out["zu"], out["zi"], self._content(out["g"], out["s"], rows)

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U, d+1)`` and ``(N, d+1)``: DGMRec's, with cold items' rows from the head and the offset β."""
        zu, zi, c = self._scoring()
        if not self.config.get("cold_scoring", True):
            return zu, zi
        return with_offset(zu, zi, self.cold_items, c, float(self.cold_offset))

    def before_evaluation(self, trainer, split: str) -> None:
        super().before_evaluation(trainer, split)
        if split == "valid" and self.config.get("cold_scoring", True) and self.config.get("cold_calibration", True):
            self.calibrate(trainer.evaluator, getattr(trainer, "valid_metric", "recall@20"))

    @torch.no_grad()
    def calibrate(self, evaluator, metric: str = "recall@20") -> dict[str, Any]:
        """Set the offset β of cold items' scores from the validation split
        (:func:`graphrec.models.cold_offset.choose_offset`, reference = plain DGMRec's scores)."""
        was = self.training
        self.eval()
        zu, zi, c = self._scoring()
        if c.shape[0] == 0:
            self.train(was)
            return {"offset": 0.0, "t": 0.0, "table": [], "reference": None}
        info = choose_offset(evaluator, zu, zi, self.cold_items, c, Scorer(zu, zi),
                             float(self.config["cold_tolerance"]), metric)
        self.cold_offset.fill_(info["offset"])
        self.train(was)
        return info

    @torch.no_grad()
    def new_item_representations(self, new: NewItems) -> torch.Tensor:
        from graphrec.models.dgmrec_new_items import complete_features

        if not self.config.get("cold_scoring", True):
            return super().new_item_representations(new)
        self.eval()
        feats = complete_features(self, new)
        c = self._content(self.general_encoder(feats), self.specific_encoder(feats))
        return torch.cat([c, torch.full_like(c[:, :1], float(self.cold_offset))], dim=1)
