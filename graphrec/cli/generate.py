"""``graphrec refine-graph``, ``retrieve`` and ``retrieval-eval``: tools of models that generate missing modalities."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from graphrec.cli.common import (
    CONTEXT,
    _console,
    _import_plugins,
    _prepare_out,
    plugin_option,
    stage,
    trust_option,
)
from graphrec.errors import GraphrecError, GraphrecWarning


def _load_generator(checkpoint: Path, plugins: tuple[str, ...] = (), trust: bool = False):
    from graphrec.train.checkpoint import load_model

    _import_plugins(plugins)
    model, dataset, payload = load_model(checkpoint, trust=trust)
    if not hasattr(model, "generated_features"):
        raise GraphrecError(
            f"model '{payload['model']}' does not generate missing modalities; train a generating model such as dgmrec"
        )
    model.eval()
    return model, dataset, payload


@click.command("refine-graph", context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for the generated features and refined graphs.")
@click.option("--lambda", "lam", type=float, help="Blending weight of the refreshed rows (default: the model's avg_lambda).")
@click.option("--overwrite", is_flag=True, help="Allow writing into a non-empty --out folder.")
@click.option("--observed-rows", type=click.Choice(["input", "trained"]), default="input", show_default=True,
              help="Rows of items that have the modality in <m>_feat_generated.npy: the dataset's own features "
                   "(input) or the model's trained raw table (trained; DGMRec trains it, train_raw_features).")
@plugin_option
@trust_option
def refine_graph(checkpoint, out, lam, overwrite, observed_rows, plugins, trust) -> None:
    """Generate missing modality features with a trained model and refine its item-item graphs.

    \b
    Writes, per modality m:
      <m>_feat_generated.npy   (N, d_m) features; rows of items missing m are generated, the
                               others are the dataset's own (--observed-rows trained: the model's)
      <m>_generated_mask.npy   (N,) bool, True where the row was generated
      <m>_item_graph.npz       refined graph as an edge list (src, dst, weight, refinement, n_items);
                               refinement edges point from neighbours into items missing m
    Items missing every modality are generated too.
    """
    from graphrec.data.interactions import atomic_save_npy, atomic_write_json
    from graphrec.graph.io import save_item_graph

    if lam is not None and not 0.0 <= lam <= 1.0:
        raise GraphrecError(f"--lambda must be in [0, 1], got {lam}")
    console = _console()
    model, dataset, payload = _load_generator(checkpoint, plugins, trust)  # a refused checkpoint creates no --out
    out_dir = _prepare_out(out, "refine", dataset.name, overwrite)
    with stage(console, "generating features and refining graphs"):
        result = model.export_refined(lam)
    summary = {}
    for m, r in result.items():
        feats = r["features"].astype(np.float32)
        if observed_rows == "input":  # the user's observed features, untouched; the graph rows are the model's
            feats[~r["generated"]] = np.asarray(dataset.features[m], dtype=np.float32)[~r["generated"]]
        atomic_save_npy(out_dir / f"{m}_feat_generated.npy", feats)
        atomic_save_npy(out_dir / f"{m}_generated_mask.npy", r["generated"])
        save_item_graph(out_dir / f"{m}_item_graph.npz", r["graph"], r["refined"])
        refined_edges = int(r["refined"][r["graph"].tocoo().row].sum())
        summary[m] = {"generated_rows": int(r["generated"].sum()), "edges": int(r["graph"].nnz), "refinement_edges": refined_edges,
                      **norm_ratio(feats, r["generated"])}
        _warn_scale(m, summary[m])
    atomic_write_json(out_dir / "refine_summary.json", {"checkpoint": str(checkpoint), "observed_rows": observed_rows, "modalities": summary})
    table = Table(title=f"refined graphs of {dataset.name}")
    for col in ("modality", "generated rows", "edges", "refinement edges", "norm generated / observed"):
        table.add_column(col, justify="right" if col != "modality" else "left")
    for m, v in summary.items():
        ratio = "–" if v["norm_ratio"] is None else f"{v['norm_ratio']:.3g}"
        table.add_row(m, str(v["generated_rows"]), str(v["edges"]), str(v["refinement_edges"]), ratio)
    console.print(table)
    console.print(f"wrote {out_dir}")


#: generated rows whose median norm is off the observed rows' by more than this factor (either way) get a warning
NORM_RATIO_WARN = 10.0


def norm_ratio(feats: np.ndarray, generated: np.ndarray) -> dict:
    """Median L2 row norms of the generated and the observed rows of ``feats`` ``(N, d)`` (``generated``:
    ``(N,)`` bool) and their ratio (``None`` where either group is empty or the observed norm is 0)."""
    norms = np.linalg.norm(feats, axis=1)
    gen = float(np.median(norms[generated])) if generated.any() else None
    obs = float(np.median(norms[~generated])) if (~generated).any() else None
    ratio = gen / obs if gen is not None and obs else None
    return {"median_norm_generated": gen, "median_norm_observed": obs, "norm_ratio": ratio}


def _warn_scale(modality: str, v: dict) -> None:
    """A :class:`GraphrecWarning` when the generated rows are on another scale than the observed ones."""
    ratio = v["norm_ratio"]
    if ratio is None or 1 / NORM_RATIO_WARN <= ratio <= NORM_RATIO_WARN:
        return
    warnings.warn(
        f"generated {modality} rows have median norm {v['median_norm_generated']:.3g} against "
        f"{v['median_norm_observed']:.3g} for the observed rows ({ratio:.3g}x): rescale them before using them as "
        "features, or retrain with --set recon_rows=observed (docs/models/dgmrec.md, 'Reading the loss curves')",
        GraphrecWarning, stacklevel=2)


@click.command(context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--item", "item", type=int, required=True, help="Item id whose modality is generated.")
@click.option("--modality", "modality", required=True, help="Modality to generate and search in (e.g. image).")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Number of items to return.")
@click.option("--json", "as_json", is_flag=True, help="Print the ranking as JSON.")
@plugin_option
@trust_option
def retrieve(checkpoint, item, modality, k, as_json, plugins, trust) -> None:
    """Cross-modal retrieval: rank items by similarity of ITEM's generated MODALITY feature.

    The item's feature of the modality is generated from its other modalities and its
    users' preferences, then compared (cosine) with the features of items that have it.
    """
    import torch

    from graphrec.eval.retrieval import rank_by_cosine

    model, dataset, _ = _load_generator(checkpoint, plugins, trust)
    if modality not in dataset.modalities:
        raise GraphrecError(f"unknown modality '{modality}'; this dataset has {', '.join(dataset.modalities)}")
    if not 0 <= item < dataset.n_items:
        raise GraphrecError(f"--item {item} is outside 0..{dataset.n_items - 1}")
    if k < 1:
        raise GraphrecError("-k must be at least 1")
    gen = model.generated_features()[modality]
    has = ~dataset.missing.missing[modality]
    cand = np.flatnonzero(has)
    if len(cand) == 0:
        raise GraphrecError(f"no item has modality '{modality}' to retrieve from")
    table_feats = torch.from_numpy(dataset.features[modality][cand])
    query = torch.from_numpy(gen[item : item + 1])
    top = rank_by_cosine(query, table_feats, k)[0].numpy()
    sims = torch.nn.functional.cosine_similarity(query, table_feats[top], dim=1).numpy()
    ranking = [{"rank": r + 1, "item": int(cand[t]), "cosine": float(s)} for r, (t, s) in enumerate(zip(top, sims))]
    status = "missing" if dataset.missing.missing[modality][item] else "observed"
    if as_json:
        click.echo(json.dumps({"item": item, "modality": modality, "status": status, "ranking": ranking}))
        return
    table = Table(title=f"items closest to the generated {modality} of item {item} ({modality} {status})")
    table.add_column("rank", justify="right")
    table.add_column("item", justify="right")
    table.add_column("cosine", justify="right")
    for r in ranking:
        table.add_row(str(r["rank"]), str(r["item"]), f"{r['cosine']:.4f}")
    Console().print(table)


@click.command("retrieval-eval", context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
@plugin_option
@trust_option
def retrieval_eval(checkpoint, as_json, plugins, trust) -> None:
    """Table 3 protocol: Hit@10/20 of retrieving items from their generated modality vs nearest neighbours.

    For items whose modality m is masked, the generated m feature is compared with the
    true features of all items (needs the true rows in the feature file, e.g. masks
    made with 'graphrec mask' or the synthetic set); hit = the item itself in the top K.
    """
    from graphrec.eval.retrieval import evaluate_retrieval

    model, dataset, payload = _load_generator(checkpoint, plugins, trust)
    rows = evaluate_retrieval(model.generated_features(), dataset)
    if as_json:
        click.echo(json.dumps(rows))
        return
    table = Table(title=f"cross-modal retrieval, {payload['model']} on {dataset.name}")
    for col in ("modality", "items", "group", "method", "hit@10", "hit@20"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["modality"], str(r["items"]), r["group"], r["method"],
                      "–" if r["hit@10"] is None else f"{r['hit@10']:.4f}", "–" if r["hit@20"] is None else f"{r['hit@20']:.4f}")
    Console().print(table)
