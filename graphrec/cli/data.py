"""``graphrec datasets`` and ``graphrec mask``: dataset and missing-modality mask tools."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
from rich.table import Table

from graphrec.cli.common import (
    CONTEXT,
    GraphrecGroup,
    _console,
    _prepare_out,
)
from graphrec.errors import GraphrecError


@click.group(cls=GraphrecGroup, context_settings=CONTEXT)
def datasets() -> None:
    """Dataset tools."""


@datasets.command("synth", context_settings=CONTEXT)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write (created; must be empty).")
@click.option("--users", type=int, default=800, show_default=True)
@click.option("--items", type=int, default=1000, show_default=True)
@click.option("--interactions", type=int, default=25, show_default=True, help="Mean interactions per user (5 at least).")
@click.option("--modalities", default="image,text", show_default=True, help="Comma-separated modality names.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--mask/--no-mask", default=True, show_default=True, help="Also write missing_items_even.npy (1/(M+1) of items per number of missing modalities).")
@click.option("--overwrite", is_flag=True, help="Allow writing into a non-empty folder.")
def datasets_synth(out, users, items, interactions, modalities, seed, mask, overwrite) -> None:
    """Write the embedded synthetic dataset in MMRec format (synthetic.inter, <modality>_feat.npy).

    Feature files hold the true features of every item; the mask file says which are
    to be treated as missing, so retrieval of hidden modalities can be scored.
    Large sets are generated in chunks (docs/scaling.md), e.g. 10^6 items and 10^7
    interactions: --users 43000 --items 1000000 --interactions 250 (a few minutes).
    """
    from graphrec.data.features import check_modality_names
    from graphrec.data.interactions import atomic_save_npy, write_inter
    from graphrec.data.masks import generate_missing, save_mask_file
    from graphrec.data.synthetic import make_synthetic

    mods = check_modality_names([m.strip() for m in modalities.split(",") if m.strip()], "--modalities")
    if not mods:
        raise GraphrecError("--modalities needs at least one name")
    from graphrec.config import check_range

    check_range("synth_users", users, "--users")
    check_range("synth_items", items, "--items")
    check_range("synth_interactions", interactions, "--interactions")
    out_dir = _prepare_out(out, "synth", "data", overwrite)
    with _console().status(f"generating {users:,} users x {items:,} items") as status:
        syn = make_synthetic(n_users=users, n_items=items, modalities=mods, seed=seed, mean_interactions=interactions)
        status.update(f"writing {out_dir / 'synthetic.inter'} ({len(syn.inter.users):,} rows)")
        write_inter(out_dir / "synthetic.inter", syn.inter.users, syn.inter.items, syn.inter.labels)
        for m, x in syn.features.items():
            status.update(f"writing {out_dir / f'{m}_feat.npy'}")
            atomic_save_npy(out_dir / f"{m}_feat.npy", x)
        if mask:
            save_mask_file(out_dir / "missing_items_even.npy", generate_missing(items, mods, None, seed=1225 + seed))
    click.echo(f"wrote {out_dir}: synthetic.inter ({len(syn.inter.users)} rows), " + ", ".join(f"{m}_feat.npy" for m in mods)
               + (", missing_items_even.npy" if mask else ""))


@datasets.command("prepare", context_settings=CONTEXT)
@click.argument("name", metavar="NAME")
@click.option("--source", type=click.Path(path_type=Path), help="Shared data root (holds tiktok-mmssl/, dgmrec-masks/, ml100k-mm/, ml1m-posters/). Default: $GRAPHREC_SHARED_DATA, else ../shared/data.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write (created; must be empty unless --overwrite).")
@click.option("--overwrite", is_flag=True, help="Allow writing into a non-empty folder (files of the same name are replaced).")
@click.option("--min-rating", type=click.IntRange(0, 5), help="ml100k only: keep ratings >= this as positives (default 0 = every rating).")
@click.option("--valid-seed", type=int, help="ml1m only: seed of the validation split carved from CoLaKG's train.txt (default 2025).")
def datasets_prepare(name, source, out, overwrite, min_rating, valid_seed) -> None:
    """Turn a shared real-data folder into an MMRec-format folder: NAME is tiktok, ml100k or ml1m.

    \b
    tiktok  DGMRec's tiktok(.inter|_del.inter) + masks 0.6/0.75, MMSSL image/audio features
            (float32), new_items.npy for the new-item setting
    ml100k  u.data -> 0-based implicit interactions, chronological 80/10/10 split per user,
            poster/IMDb-text features, natural mask missing_items_natural.npy
    ml1m    CoLaKG train/test + a seeded 10% validation split, poster/title features,
            natural mask (3 items without poster)
    Also writes PREPARED.json (sources, counts, split and missingness rules, licence:
    research use only). See docs/datasets.md.
    """
    from graphrec.data.adapters import prepare_dataset

    console = _console()
    if out.exists():  # fail fast on a non-empty --out; a new folder is only created once the sources check out
        _prepare_out(out, "prepare", name, overwrite)
    with console.status(f"reading and checking the {name} sources"):
        prepared = prepare_dataset(name, source, min_rating=min_rating, valid_seed=valid_seed)
    out_dir = _prepare_out(out, "prepare", name, overwrite)
    with console.status(f"writing {out_dir}") as status:
        files = prepared.write(out_dir, progress=lambda f: status.update(f"writing {out_dir / f}"))
    table = Table(title=f"{name} prepared in {out_dir}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    for key, value in prepared.summary:
        table.add_row(key, value)
    console.print(table)
    console.print(f"wrote {out_dir}: {', '.join(files)} (research use only; see PREPARED.json)")
    stale = sorted(p.name for p in out_dir.iterdir() if p.name not in files)
    if stale:
        console.print(f"[yellow]note:[/] {out_dir} also holds files this command did not write: {', '.join(stale)}")


@click.command(context_settings=CONTEXT)
@click.option("--data-dir", type=click.Path(path_type=Path), required=True, help="MMRec-format folder.")
@click.option("--ratio", "ratios", multiple=True, help="Missing ratio in [0, 1) (repeatable: nested masks), or 'even' for 1/(M+1) of items per number of missing modalities.")
@click.option("--has", "has_files", multiple=True, metavar="MODALITY=FILE", help="Instead of --ratio: the natural mask from 'graphrec featurize' sidecars, e.g. --has image=image_feat.has.npy (repeatable; False = missing).")
@click.option("--name", default="natural", show_default=True, help="With --has: write missing_items_<name>.npy.")
@click.option("--modalities", help="Comma-separated modality names (default: every <modality>_feat.npy).")
@click.option("--dataset", help="Name of the <dataset>.inter file when the folder holds several.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=1225, show_default=True)
@click.option("--draw", type=click.Choice(["cycle", "random"]), default="cycle", show_default=True,
              help="How missing items get their modalities: cycle = exactly equal shares per combination (the authors' released masks); random = drawn per item (the papers' text).")
@click.option("--overwrite", is_flag=True, help="Replace existing mask files.")
def mask(data_dir, ratios, has_files, name, modalities, dataset, seed, draw, overwrite) -> None:
    """Write missing-modality masks missing_items_<ratio>.npy (graphrec's mask format, docs/datasets.md).

    Masks of several ratios made with the same seed are nested: an item missing a
    modality at 0.2 misses the same modalities at 0.4. With --has, the mask says which items
    had no input when their features were made ('graphrec featurize' writes <stem>.has.npy;
    its rows must be in the dataset's item order, as --item-ids gives them).
    """
    from graphrec.data.dataset import find_inter_file
    from graphrec.data.features import check_modality_names, discover_modalities
    from graphrec.data.interactions import read_inter
    from graphrec.data.masks import MissingModalities, generate_missing, mask_file_name, save_mask_file

    if not data_dir.is_dir():
        raise GraphrecError(f"data directory '{data_dir}' does not exist")
    if bool(ratios) == bool(has_files):
        raise GraphrecError("pass --ratio R (generated masks) or --has MODALITY=FILE (natural mask), not both or neither")
    _, inter_path = find_inter_file(data_dir, dataset)
    n_items = read_inter(inter_path).n_items
    if has_files:
        specs = [spec.partition("=") for spec in has_files]
        bad = next((a + b + c for a, b, c in specs if not b or not c), None)
        if bad is not None:
            raise GraphrecError(f"--has '{bad}': expected MODALITY=FILE, e.g. image=image_feat.has.npy")
        check_modality_names([m for m, _, _ in specs], "--has")
        missing = {m: ~_read_has(Path(f), n_items) for m, _, f in specs}
        path = data_dir / mask_file_name(name)
        if path.exists() and not overwrite:
            raise GraphrecError(f"'{path}' exists; pass --overwrite to replace it")
        save_mask_file(path, MissingModalities(list(missing), missing))
        click.echo(f"wrote {path}: " + ", ".join(f"{m} missing: {int(v.sum())}" for m, v in missing.items()))
        return
    mods = [m.strip() for m in modalities.split(",")] if modalities else discover_modalities(data_dir)
    if not mods:
        raise GraphrecError(f"no <modality>_feat.npy in '{data_dir}'; name the modalities with --modalities image,text")
    for r in ratios:
        if r == "even":
            ratio = None
        else:
            try:
                ratio = float(r)
            except ValueError:
                raise GraphrecError(f"--ratio '{r}' is not a number in [0, 1) or 'even'") from None
        path = data_dir / mask_file_name(r)
        if path.exists() and not overwrite:
            raise GraphrecError(f"'{path}' exists; pass --overwrite to replace it")
        m = generate_missing(n_items, mods, ratio, seed=seed, draw=draw)
        save_mask_file(path, m)
        counts = np.bincount(m.count(), minlength=len(mods) + 1)
        click.echo(f"wrote {path}: " + ", ".join(f"{k} missing: {c}" for k, c in enumerate(counts)))


def _read_has(path: Path, n_items: int) -> np.ndarray:
    """A featurize ``.has.npy``: ``(N,)`` bool, True = the item had input."""
    if not path.is_file():
        raise GraphrecError(f"--has file '{path}' does not exist")
    try:
        has = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        raise GraphrecError(f"--has file '{path}' cannot be read as a .npy array ({type(exc).__name__})") from None
    if has.dtype != np.bool_ or has.ndim != 1:
        raise GraphrecError(f"--has file '{path}': expected a 1-D bool array (a featurize .has.npy), got {has.dtype} of shape {has.shape}")
    if len(has) != n_items:
        raise GraphrecError(f"--has file '{path}' has {len(has)} rows but the dataset has {n_items} items; featurize with --item-ids in the dataset's item order")
    return has
