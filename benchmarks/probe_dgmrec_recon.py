"""What DGMRec's reconstruction term is made of, epoch by epoch (docs/models/dgmrec.md, "Reading the
loss curves: the reconstruction term").

Trains DGMRec as ``graphrec fit`` does (a preset from ``--config`` if given) and after every epoch
prints one JSON line: the logged ``recon`` term and, per modality, the decoder's MSE (no noise)
on the rows of items that observe the modality and on those missing it, the mean row norms of
the observed and of the missing (generated) raw rows, of the decoder output and of ``G_m``/``S_m``.

    OMP_NUM_THREADS=1 python benchmarks/probe_dgmrec_recon.py --set epochs=25 --set stopping_step=100
    OMP_NUM_THREADS=1 python benchmarks/probe_dgmrec_recon.py --data-dir /tmp/data/tiktok \\
        --config configs/dgmrec/tiktok.yaml --set dataset=tiktok --set epochs=25 --set eval_step=5

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(ap)
    args = ap.parse_args(argv)

    import torch

    from graphrec.train.trainer import Callback, Trainer

    cls, cfg, ds = model_config_and_data("dgmrec", args)
    model = cls(ds, cfg)

    def r(x: torch.Tensor) -> float | None:
        return round(float(x), 4) if x.numel() else None

    class Probe(Callback):
        @torch.no_grad()
        def on_epoch_end(self, trainer, epoch, logs):
            m = trainer.model
            f = m.propagate(m.graph, fuse=False)
            row = {"epoch": epoch + 1, "recon": round(float(logs.get("recon", float("nan"))), 6)}
            for j, mod in enumerate(m.modalities):
                x_hat = m.decoders[mod](f["G"][mod], f["S"][mod], 0.0)
                x = m.raw[mod]
                obs = m.observed[:, j].to(x.device)
                err = ((x_hat - x) ** 2).mean(1)
                norm = x.norm(dim=1)
                row[mod] = {
                    "mse_observed": r(err[obs].mean()) if obs.any() else None,
                    "mse_missing": r(err[~obs].mean()) if (~obs).any() else None,
                    "norm_observed": r(norm[obs].mean()) if obs.any() else None,
                    "norm_missing": r(norm[~obs].mean()) if (~obs).any() else None,
                    "norm_decoded": r(x_hat.norm(dim=1).mean()),
                    "norm_G": r(f["G"][mod].norm(dim=1).mean()),
                    "norm_S": r(f["S"][mod].norm(dim=1).mean()),
                }
            print(json.dumps(row), flush=True)

    Trainer(model, ds, cfg, callbacks=[Probe()], progress=False).fit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
