"""What CI2MG's reconstruction term ``rec`` is made of, epoch by epoch (docs/models/ci2mg.md,
"Reading the loss curves").

Trains CI2MG as ``graphrec fit`` does (a preset from ``--config`` if given) and after every epoch
prints one JSON line: the logged ``rec``/``contrastive``/``bpr`` terms, validation Recall@20, and per
modality, over every item that observes the modality (the set ``rec`` samples its batches from):

* ``mse``: ``MSE(Z_m, P_m)`` as in the loss (``Z_m`` with BatchNorm in training mode, as the loss
  sees it; BatchNorm's running statistics are restored afterwards, so the probe changes nothing);
* ``norm_P``, ``norm_Z``: mean row norms of the target ``P_m = Φ_m(X_m)`` and of ``Z_m``;
* ``mse_norm`` + ``mse_dir`` = ``mse``: the part from the row norms differing,
  ``mean (|Z|-|P|)² / d``, and from the directions, ``mean 2|Z||P|(1-cos) / d``;
* ``mse_mean`` + ``mse_centred`` = ``mse``: the part from the column means differing (what
  BatchNorm's shift β can fix) and the rest; ``var_P`` = ``mean ‖P - P̄‖² / d`` is the MSE of the best
  item-independent prediction (the column mean), so ``mse_centred ≥ var_P`` means ``Z_m`` carries no
  information about the item's own projected feature;
* ``rel`` = ``mse / mean(P²)``: the scale-free error;
* ``W_phi``, ``b_phi``: Frobenius norm of ``Φ_m``'s weight and of its bias; ``bn_gamma``: mean ``|γ|``
  of the shared BatchNorm; ``q_sat``: fraction of ``Q_m`` entries below 0.01 or above 0.99;
  ``hv_min``: smallest nonzero ``|row sum|`` of the prototype membership ``H_m`` (``D_v``; the
  hypergraph divides by it);
* ``mse_deg``: the same MSE weighted by the item's train degree (roughly how batches sample it);
* ``pre_bn_mean``, ``pre_bn_std``: mean ``|column mean|`` and mean column std of BatchNorm's input
  ``[Q_m; Q̂_m] W_m + b_m`` (a large ratio means BatchNorm subtracts a large common offset, and
  float32 rounding eats the item-to-item differences); ``qhat_mean``, ``qhat_std``: the same for
  ``Q̂_m``; ``dT_shift``: norm of the row vector ``ΔT_m Q_m`` that ΔT adds to every
  item's ``Q̂_m`` (0 unless ``ci2mg_train_delta``; null with one modality); ``bn_running_mean_max``.

    OMP_NUM_THREADS=1 python benchmarks/probe_ci2mg_rec.py --set epochs=60 --set stopping_step=100
    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/probe_ci2mg_rec.py --data-dir /tmp/data/tiktok \\
        --config configs/ci2mg/tiktok.yaml --set dataset=tiktok --set missing_ratio=0.6 \\
        --set eval_mask_valid_in_test=false --set seed=2026 --set epochs=11 [--set ci2mg_train_delta=true]

Results on ../shared/data folders are for research use only (see each SOURCE.md licence).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from _model_setup import (  # benchmarks/, beside this file
    add_config_args,
    model_config_and_data,
)


def rec_parts(z, p) -> dict[str, float]:
    """The decompositions of ``MSE(z, p)`` described in the module docstring. Shapes: ``(n, d), (n, d)``."""
    import torch

    d = z.shape[1]
    nz, np_ = z.norm(dim=1), p.norm(dim=1)
    cos = torch.nn.functional.cosine_similarity(z, p, dim=1)
    zbar, pbar = z.mean(0), p.mean(0)
    out = {
        "mse": ((z - p) ** 2).mean(),
        "mse_norm": ((nz - np_) ** 2).mean() / d,
        "mse_dir": (2 * nz * np_ * (1 - cos)).mean() / d,
        "mse_mean": ((zbar - pbar) ** 2).mean(),
        "mse_centred": (((z - zbar) - (p - pbar)) ** 2).mean(),
        "var_P": ((p - pbar) ** 2).mean(),
        "rel": ((z - p) ** 2).mean() / (p**2).mean(),
        "norm_P": np_.mean(),
        "norm_Z": nz.mean(),
        "cos": cos.mean(),
    }
    return {k: round(float(v), 4) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(ap)
    args = ap.parse_args(argv)

    import torch

    from graphrec.train.trainer import Callback, Trainer

    cls, cfg, ds = model_config_and_data("ci2mg", args)
    model = cls(ds, cfg)

    class Probe(Callback):
        row: dict = {}

        @torch.no_grad()
        def on_epoch_end(self, trainer, epoch, logs):
            m = trainer.model
            was_training = m.training
            bn_state = {k: v.clone() for k, v in m.bn.state_dict().items()}
            m.train()
            out = m.compute()
            m.bn.load_state_dict(bn_state)
            m.train(was_training)
            row = {"epoch": epoch + 1}
            deg = m.graph.in_degrees(etype="ui").float()  # train users per item
            for key in ("rec", "contrastive", "bpr"):
                row[key] = round(float(logs.get(key, float("nan"))), 4)
            for k, mod in enumerate(m.modalities):
                obs = m.observed[:, k]
                parts = rec_parts(out["Z"][k][obs], out["P"][k][obs])
                q = out["Q"][k]
                hv = m.hypergraphs[mod].membership(m.aggregation(m.graph, out["P"][k])[1]).sum(1).abs()
                hv = hv[hv > 0]
                w = deg[obs]
                err = ((out["Z"][k][obs] - out["P"][k][obs]) ** 2).mean(1)
                y = m.enhance[mod](torch.cat([out["Q"][k], out["Q_hat"][k]], dim=1))  # pre-BN input
                delta = m.delta(k)
                parts.update(
                    W_phi=round(float(m.projections[mod].weight.norm()), 3),
                    b_phi=round(float(m.projections[mod].bias.norm()), 3),
                    q_sat=round(float(((q < 0.01) | (q > 0.99)).float().mean()), 4),
                    hv_min=float(f"{float(hv.min()):.3g}") if hv.numel() else None,
                    mse_deg=round(float((err * w).sum() / w.sum()), 4),
                    pre_bn_mean=float(f"{float(y.mean(0).abs().mean()):.4g}"),
                    pre_bn_std=float(f"{float(y.std(0).mean()):.4g}"),
                    qhat_std=float(f"{float(out['Q_hat'][k].std(0).mean()):.4g}"),
                    qhat_mean=float(f"{float(out['Q_hat'][k].mean()):.4g}"),
                    dT_shift=None if delta is None else float(f"{float((delta @ out['Q'][k]).norm()):.4g}"),
                )
                row[mod] = parts
            row["bn_gamma"] = round(float(m.bn.weight.abs().mean()), 4)
            row["bn_running_mean_max"] = float(f"{float(m.bn.running_mean.abs().max()):.4g}")
            self.row = row

        def on_epoch_logged(self, trainer, epoch, record, evaluated, improved):
            row = dict(self.row)
            if "valid_recall@20" in record:
                row["valid_recall@20"] = record["valid_recall@20"]
            print(json.dumps(row), flush=True)

    res = Trainer(model, ds, cfg, callbacks=[Probe()], progress=False).fit()
    test = res.test.metrics.get("recall@20") if res.test is not None else None
    print(json.dumps({"best_epoch": res.best_epoch, "test_recall@20": test}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
