"""Ablation variants of the papers, each a set of config overrides.

``DGMREC_ABLATIONS``: DGMRec (SIGIR 2025) Table 4. ``CI2MG_ABLATIONS``: CI2MG (ACM MM 2023)
Table 3, read as a cumulative build-up intra-modal → + inter-modal → + contrastive → full.
Variants graphrec cannot express with config keys are listed in ``*_NOT_EXPRESSIBLE`` with
the reason; the runner prints them and writes them into ``results.md`` instead of running them.
"""

from __future__ import annotations

from typing import Any

#: DGMRec Table 4 (spec 4.7 weights; CLUB = ``sampler``, inter-modal InfoNCE = ``interModal``).
DGMREC_ABLATIONS: dict[str, dict[str, Any]] = {
    "DGMRec (full)": {},
    "w/o disentangling (CLUB, InfoNCE)": {"sampler": 0.0, "interModal": 0.0},
    "w/o alignment (UI, BM)": {"intraModal": 0.0, "alignBM": 0.0},
    "w/o generation": {"generation": False},
    "w/o refinement": {"refinement": False},
    "w/o generation & refinement": {"generation": False, "refinement": False},
}

#: CI2MG Table 3. ``ci2mg_loss_weighting: paper`` makes the loss L_bpr + lamb_1 L_s + lamb_2 L_rec,
#: so ``lamb_2 = 0`` drops the task-guided reconstruction L_rec and ``lamb_1 = 0`` the
#: contrastive term L_s (with lamb_1 = lamb_2 = 1 both weightings give the same loss).
CI2MG_ABLATIONS: dict[str, dict[str, Any]] = {
    "CI2MG (full)": {},
    "+ contrastive (intra + inter + L_s, no L_rec)": {"ci2mg_loss_weighting": "paper", "lamb_2": 0.0},
    "+ inter (intra + inter, no L_s, no L_rec)": {"ci2mg_loss_weighting": "paper", "lamb_1": 0.0, "lamb_2": 0.0},
    "intra only (no OT, no L_s, no L_rec)": {"inter_modal": False, "ci2mg_loss_weighting": "paper", "lamb_1": 0.0,
                                             "lamb_2": 0.0},
}

#: CI2MG Table 3 variants that no config key expresses, with the reason.
CI2MG_NOT_EXPRESSIBLE: dict[str, str] = {}  # every Table 3 row is expressible (``inter_modal: false``)

#: model name -> (variants, variants that cannot be expressed)
ABLATIONS: dict[str, tuple[dict[str, dict[str, Any]], dict[str, str]]] = {
    "dgmrec": (DGMREC_ABLATIONS, {}),
    "ci2mg": (CI2MG_ABLATIONS, CI2MG_NOT_EXPRESSIBLE),
}
