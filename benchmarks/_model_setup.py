"""Shared set-up of the benchmarks/ probes: the config arguments and one model's config and data.

    ap = argparse.ArgumentParser(...); add_config_args(ap); args = ap.parse_args(argv)
    cls, cfg, ds = model_config_and_data("dgmrec", args)   # as `graphrec fit` resolves them
"""

from __future__ import annotations

import argparse
from typing import Any


def add_config_args(ap: argparse.ArgumentParser) -> None:
    """``--data-dir``, ``--config`` (repeatable YAML presets), ``--set KEY=VALUE`` (repeatable), ``--threads``."""
    ap.add_argument("--data-dir")
    ap.add_argument("--config", action="append", default=[], help="YAML preset(s), applied in order")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--threads", type=int, default=1)


def model_config_and_data(model: str, args: argparse.Namespace) -> tuple[type, dict[str, Any], Any]:
    """The registered class of ``model``, its resolved config (defaults, ``--config`` files, then
    ``--set`` values parsed as YAML; CPU, ``--threads``) and its dataset; seeds the RNGs from the config."""
    import yaml

    from graphrec.config import resolve_config
    from graphrec.data.dataset import load_dataset
    from graphrec.registry import MODELS, load_builtin
    from graphrec.train.seed import set_seed

    load_builtin()
    over: dict[str, Any] = {"device": "cpu", "threads": args.threads}
    for kv in args.set:
        k, v = kv.split("=", 1)
        over[k] = yaml.safe_load(v)
    if args.data_dir:
        over["data_dir"] = args.data_dir
    cls = MODELS.get(model)
    cfg = resolve_config(model, cls.default_config, args.config, over)
    set_seed(int(cfg["seed"]))
    return cls, cfg, load_dataset(cfg)
