"""Scoring items added to the catalogue after DGMRec was trained (``graphrec recommend --new-items``).

An item added after training has no user (its preference gate ``ρ`` is 0) and no trained ID
embedding, exactly like a new item of the new-item setting (spec 4.9); DGMRec's inference
treats it as such, in the one-item form (no retraining, the item graphs are not rebuilt):

1. **Features.** Observed rows are used as given. A row missing modality ``m`` is the mean of
   the model's observed ``m`` rows (the dataset's ``mean`` imputation); with ``generation`` and
   more than one modality, an item missing exactly one modality has it *generated*
   (eq. 12-15 without propagation: ``x̂_m = Dec_m(Γᵍ_m([g_o]_{o≠m}), Γˢ_m(ρ=0))``).
2. **Item-graph rows.** In each modality graph the item is linked to its ``knn_k`` nearest
   items that observe ``m`` (cosine; its own self loop counts in its row sum, as in
   :func:`graphrec.graph.knn.knn_topk`), normalised ``sim / sqrt(r_new r_j)`` with the
   neighbours' stored row sums. A generated modality's row is scaled by ``avg_lambda`` (the
   refinement blend of a masked row, spec 4.8) when refinement is on, and is empty otherwise;
   a row of an imputed modality is empty (``G_m = S_m = 0``), as for a missing item in Ã_m.
3. **Representation.** ``G_m, S_m`` = the row applied to the old items' gated
   (``n_mm_layers - 1`` times propagated) ``ρ ⊙ g_m`` and ``ρ ⊙ s_m``; the ID part is 0 (an
   untrained item's ID embedding is its random initial vector, whose mean is 0);
   ``z = 0 + (mean_m G_m + Σ_m S_m) / (M + 1)`` (eq. 17-18).
"""

from __future__ import annotations

import numpy as np
import torch

from graphrec.data.catalogue import NewItems
from graphrec.graph.content import content_neighbours


@torch.no_grad()
def complete_features(model, new: NewItems) -> dict[str, torch.Tensor]:
    """``{m: (n, d_m)}`` features of new items: observed rows, generated or mean-imputed missing rows (step 1)."""
    mods = model.modalities
    dev = model.item_emb.device
    obs = torch.from_numpy(new.observed).to(dev)
    feats: dict[str, torch.Tensor] = {}
    for j, m in enumerate(mods):
        x = torch.from_numpy(np.nan_to_num(new.features[m])).to(dev)
        has = torch.from_numpy(~model.missing_np[m] & ~model.new_np).to(dev)
        ref = model.raw[m].detach()[has].mean(dim=0) if has.any() else model.raw[m].detach().mean(dim=0)
        x[~obs[:, j]] = ref
        feats[m] = x
    one_missing = (~obs).sum(dim=1) == 1
    if model.config.get("generation", True) and len(mods) > 1 and one_missing.any():
        g = model.general_encoder(feats)
        rho0 = torch.zeros(int(one_missing.sum()), model.embedding_size, device=dev)
        for j, m in enumerate(mods):
            rows = one_missing & ~obs[:, j]
            if not rows.any():
                continue
            src = torch.cat([g[o][rows] for o in model._others(m)], dim=1)
            gen_g = model.general_generators[m](src)
            spec = model.specific_generators[m](rho0[: int(rows.sum())])
            feats[m][rows] = model.decoders[m](gen_g, spec, 0.0)
    return feats


@torch.no_grad()
def new_item_representations(model, new: NewItems) -> torch.Tensor:
    """``(n, d)`` representations of items added after training (steps 1-3 of the module docstring)."""
    model.eval()
    mods = model.modalities
    graph = model.infer_graph
    out = model.propagate(graph)
    feats = complete_features(model, new)
    obs = new.observed
    one_missing = (~obs).sum(axis=1) == 1
    gen_on = bool(model.config.get("generation", True)) and len(mods) > 1
    lam = float(model.config["avg_lambda"]) if model.config.get("refinement", True) else 0.0
    k = int(model.config["knn_k"])
    sums_src = model.infer_sums if model.infer_sums else model.sums
    n = new.n
    G, S = {}, {}
    for j, m in enumerate(mods):
        h_g = out["rho"][m] * out["g"][m]
        h_s = out["rho"][m] * out["s"][m]
        for _ in range(int(model.config["n_mm_layers"]) - 1):
            h_g = model.item_propagation.conv(graph, h_g, m)
            h_s = model.item_propagation.conv(graph, h_s, m)
        scale = np.where(obs[:, j], 1.0, np.where(one_missing & gen_on, lam, 0.0)).astype(np.float32)
        table_obs = (~model.missing_np[m])[:, None]
        q_obs = np.ones((n, 1), dtype=bool)
        idx, sim = content_neighbours({m: feats[m].cpu()}, q_obs, {m: model.raw[m].detach().cpu()}, table_obs, max(k - 1, 1))
        sim = torch.nan_to_num(sim, neginf=0.0).clamp_min(0.0)
        r_new = 1.0 + sim.sum(dim=1, keepdim=True)  # self loop (similarity 1) + neighbours
        r_nb = torch.from_numpy(np.asarray(sums_src[m], dtype=np.float32))[idx].clamp_min(1e-12)
        w = (sim / torch.sqrt(r_new * r_nb)) * torch.from_numpy(scale).unsqueeze(1)
        w = w.to(h_g.device)
        idx = idx.to(h_g.device)
        G[m] = (w.unsqueeze(2) * h_g[idx]).sum(dim=1)
        S[m] = (w.unsqueeze(2) * h_s[idx]).sum(dim=1)
    ids = torch.zeros(n, model.embedding_size, device=out["zi"].device)
    return model.fusion(ids, G, S)
