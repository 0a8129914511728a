"""Swappable block slots: the call contracts a model's config can plug registered blocks into.

A model lists its slots in ``block_slots = {config_key: slot}``; the config value names a
registered block (``graphrec blocks``) and :func:`build_block` turns it into a module:

1. looks the name up in :data:`graphrec.registry.BLOCKS` (unknown name: one-line error);
2. checks that ``forward`` takes the slot's arguments;
3. checks the block's declared ``relations`` against the model's heterograph: each entry is a
   canonical etype ``('item', 'knn_{m}', 'item')`` or an etype name ``'knn_{m}'``; ``{m}`` is
   a template expanded to every modality of the model, the rest must exist as is;
4. constructs it with the keyword arguments its ``__init__`` names among the *block
   context* ``d`` (embedding size) and ``modalities`` (list of modality names); nothing
   else is passed, so other parameters need defaults;
5. adds a forward hook that checks the output shape on every call.

=============  ============================================  ==================================
slot           call                                          returns
=============  ============================================  ==================================
``ui_conv``    ``forward(g, {'user': (U, d), 'item': (N, d)})``  ``{'user': (U, d), 'item': (N, d)}``
``item_conv``  ``forward(g, h (N, d), modality: str)``         ``(N, d)``
=============  ============================================  ==================================

Both are *one layer*; the model stacks them (``n_ui_layers`` / ``n_layers`` with a layer mean,
``n_mm_layers`` keeping the last layer).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import dgl
import torch
from torch import nn

from graphrec.errors import GraphrecError
from graphrec.registry import BLOCKS

#: keyword arguments a block's ``__init__`` may ask for
CONTEXT_KEYS = ("d", "modalities")


@dataclass(frozen=True)
class Slot:
    """A call contract: ``args`` are the forward arguments after ``g``."""

    name: str
    args: tuple[str, ...]
    call: str
    returns: str


SLOTS: dict[str, Slot] = {
    "ui_conv": Slot(
        "ui_conv", ("feats",), "forward(g, {'user': (U, d), 'item': (N, d)})", "{'user': (U, d), 'item': (N, d)}"
    ),
    "item_conv": Slot("item_conv", ("h", "modality"), "forward(g, h (N, d), modality)", "(N, d)"),
}


def _shape(x: Any) -> str:
    return str(tuple(x.shape)) if torch.is_tensor(x) else type(x).__name__


def expand_relations(relations: Iterable[Any], modalities: Sequence[str]) -> list[tuple[Any, str]]:
    """``[(declared, concrete), ...]``: templated entries (``{m}``) once per modality."""
    out: list[tuple[Any, str]] = []
    for rel in relations:
        text = "|".join(rel) if isinstance(rel, tuple) else str(rel)
        if "{m}" in text:
            for m in modalities:
                out.append((rel, tuple(p.replace("{m}", m) for p in rel) if isinstance(rel, tuple) else str(rel).replace("{m}", m)))
        else:
            out.append((rel, rel))
    return out


def check_relations(label: str, relations: Iterable[Any], graph: dgl.DGLGraph, modalities: Sequence[str], model: str) -> None:
    """Raise a one-line error if a declared relation is not in ``graph``."""
    rels = tuple(relations)
    if any("{m}" in ("|".join(r) if isinstance(r, tuple) else str(r)) for r in rels) and not modalities:
        raise GraphrecError(f"{label} reads per-modality relations ({', '.join(map(str, rels))}) but model '{model}' has no modalities")
    canonical = set(graph.canonical_etypes)
    names = set(graph.etypes)
    for declared, rel in expand_relations(rels, modalities):
        ok = rel in canonical if isinstance(rel, tuple) else rel in names
        if not ok:
            have = ", ".join(sorted(names))
            raise GraphrecError(
                f"{label} reads relation {rel!r} (declared {declared!r}), which the graph of model '{model}' "
                f"does not have; its relations: {have}"
            )


def _check_signature(label: str, cls: type, slot: Slot) -> None:
    try:
        params = list(inspect.signature(cls.forward).parameters.values())[1:]  # drop self
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    n = 1 + len(slot.args)  # g + slot args
    if len(positional) < n or len(required) > n:
        got = ", ".join(p.name for p in positional)
        raise GraphrecError(f"{label} does not fit the {slot.name} slot: forward({got}) must be {slot.call} -> {slot.returns}")


def _construct(label: str, cls: type, context: dict[str, Any]) -> nn.Module:
    if cls.__init__ is nn.Module.__init__:  # no __init__ of its own
        params = {}
    else:
        try:
            params = inspect.signature(cls.__init__).parameters
        except (TypeError, ValueError):
            params = {}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs = dict(context)
    else:
        kwargs = {k: v for k, v in context.items() if k in params}
        missing = [
            n for n, p in list(params.items())[1:]
            if p.default is p.empty and n not in kwargs and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if missing:
            raise GraphrecError(
                f"{label} cannot be built: __init__ needs {', '.join(missing)}; blocks are constructed with "
                f"no arguments or with {', '.join(CONTEXT_KEYS)} only (give other parameters defaults)"
            )
    block = cls(**kwargs)
    if not isinstance(block, nn.Module):
        raise GraphrecError(f"{label} is not a torch.nn.Module ({type(block).__name__})")
    return block


class _OutputCheck:
    """Forward hook checking a slot block's output shapes (a class, so that models stay picklable)."""

    def __init__(self, label: str, slot: Slot) -> None:
        self.label = label
        self.slot = slot

    def _fail(self, got: str, want: str) -> None:
        raise GraphrecError(
            f"{self.label} returned {got}, expected {want}: slot {self.slot.name} is {self.slot.call} -> {self.slot.returns}"
        )

    def __call__(self, module: nn.Module, args: tuple, out: Any) -> None:
        if len(args) < 2:  # called with keyword arguments: nothing to compare with
            return
        if self.slot.name == "item_conv":
            if not torch.is_tensor(out) or out.shape != args[1].shape:
                self._fail(_shape(out), str(tuple(args[1].shape)))
            return
        if not isinstance(out, dict):
            self._fail(type(out).__name__, "a dict")
        for key, x in args[1].items():
            y = out.get(key)
            if not torch.is_tensor(y) or y.shape != x.shape:
                self._fail(f"{{{key!r}: {_shape(y)}}}", f"{{{key!r}: {tuple(x.shape)}}}")


def build_block(
    key: str,
    name: Any,
    slot: str,
    graph: dgl.DGLGraph,
    modalities: Sequence[str],
    d: int,
    model: str,
) -> nn.Module:
    """Build the block named ``name`` for config key ``key`` of ``model`` (see the module docstring)."""
    if not isinstance(name, str) or not name:
        raise GraphrecError(f"config key '{key}' must be a block name (see 'graphrec blocks'), got {name!r}")
    contract = SLOTS[slot]
    try:
        cls = BLOCKS.get(name)
    except GraphrecError as exc:
        raise GraphrecError(f"config key '{key}': {exc}; pass --plugin MODULE if a plugin registers it") from None
    label = f"block '{name}' (config key '{key}')"
    if not hasattr(cls, "relations"):
        raise GraphrecError(f"{label} does not declare the relations it reads: give it a class attribute relations = (...)")
    _check_signature(label, cls, contract)
    check_relations(label, cls.relations, graph, modalities, model)
    block = _construct(label, cls, {"d": int(d), "modalities": list(modalities)})
    block.register_forward_hook(_OutputCheck(label, contract))
    return block
