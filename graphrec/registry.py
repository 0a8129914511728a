"""Name -> class registries for models and blocks, and plugin loading.

``MODELS`` maps names such as ``"dgmrec"`` to :class:`graphrec.models.base.RecModel`
subclasses; ``BLOCKS`` maps names such as ``"lightgcn_conv"`` to message-passing
``nn.Module`` classes. Register with the decorators::

    @register_block("my_conv")
    class MyConv(nn.Module): ...

Unknown names raise :class:`GraphrecError` listing the known ones.

Third-party code registers the same way and is found in two ways (see ``docs/extending.md``):

* **entry points** of an installed distribution, groups ``graphrec.blocks`` and
  ``graphrec.models``: ``name = "pkg.module:Class"`` registers ``Class`` under ``name``;
  ``name = "pkg.module"`` imports the module, whose decorators must register ``name``.
  :func:`load_builtin` loads them (:func:`load_entry_points`); set
  ``GRAPHREC_DISABLE_ENTRY_POINTS=1`` to skip them.
* **plugin modules** imported by name or file path (:func:`import_plugin`, ``graphrec --plugin
  MODULE|FILE.py``); the current directory is put on ``sys.path`` first, so local files work, and a
  file outside it (absolute or ``../`` path) is imported from its own folder.

Every registered name remembers the module that registered it (:meth:`Registry.origin`), so a
checkpoint can record which plugin modules it needs (loading one never imports them: it names
the ``--plugin`` to pass).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import os
import sys
from pathlib import Path
from typing import Callable, Generic, Iterator, TypeVar

from graphrec.errors import GraphrecError

T = TypeVar("T")

#: entry-point groups scanned by :func:`load_entry_points`
ENTRY_POINT_GROUPS = {"graphrec.blocks": "block", "graphrec.models": "model"}


class Registry(Generic[T]):
    """A case-sensitive mapping from names to registered objects of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        self._dists: dict[str, str] = {}

    def register(self, name: str, *, origin: str | None = None) -> Callable[[T], T]:
        """Decorator registering an object under ``name`` (re-registering the same object is a no-op).

        ``origin`` is the module that registers it (default: the caller's module).
        """
        if origin is None:
            origin = sys._getframe(1).f_globals.get("__name__", "?")

        def decorator(obj: T) -> T:
            existing = self._items.get(name)
            if existing is not None and existing is not obj and getattr(existing, "__qualname__", None) != getattr(
                obj, "__qualname__", object()
            ):
                raise GraphrecError(f"{self.kind} name '{name}' is already registered by {existing!r}; pick another name")
            self._items[name] = obj
            self._origins.setdefault(name, origin)
            return obj

        return decorator

    def unregister(self, name: str) -> None:
        """Forget ``name`` (no error if it is not registered)."""
        self._items.pop(name, None)
        self._origins.pop(name, None)
        self._dists.pop(name, None)

    def get(self, name: str) -> T:
        """Return the object registered as ``name`` or raise a one-line error listing the known names."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            close = difflib.get_close_matches(str(name), self._items, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise GraphrecError(
                f"unknown {self.kind} '{name}'{hint}; known {self.kind}s: {', '.join(sorted(self._items)) or 'none'}"
            ) from None

    def origin(self, name: str) -> str | None:
        """The module that registered ``name`` (``None`` if unknown)."""
        return self._origins.get(name)

    def distribution(self, name: str) -> str | None:
        """The installed distribution whose entry point registered ``name``, if any."""
        return self._dists.get(name)

    def is_builtin(self, name: str) -> bool:
        """True when ``name`` was registered by graphrec itself."""
        origin = self._origins.get(name) or ""
        return origin == "graphrec" or origin.startswith("graphrec.")

    def source(self, name: str) -> str:
        """``'builtin'``, the distribution of an entry point, or the plugin module."""
        if self.is_builtin(name):
            return "builtin"
        return self._dists.get(name) or self._origins.get(name) or "?"

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._items.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._items


MODELS: Registry = Registry("model")
BLOCKS: Registry = Registry("block")

register_model = MODELS.register
register_block = BLOCKS.register

_REGISTRIES = {"block": BLOCKS, "model": MODELS}
_loaded_entry_points: set[tuple[str, str, str]] = set()
#: plugin modules imported with :func:`import_plugin`, in order
PLUGIN_MODULES: list[str] = []


def load_builtin() -> None:
    """Import the built-in models and blocks, then the installed plugins' entry points."""
    import graphrec.blocks  # noqa: F401
    import graphrec.models  # noqa: F401  (registers the built-in models)

    load_entry_points()


def _ep_label(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    where = f", distribution '{dist.name}'" if dist is not None else ""
    return f"plugin entry point '{ep.name} = {ep.value}' (group '{ep.group}'{where})"


def load_entry_points() -> None:
    """Register the objects of every installed ``graphrec.blocks`` / ``graphrec.models`` entry point.

    Runs on every :func:`load_builtin` (a scan costs about a millisecond) so that a distribution
    made visible later (``sys.path``) is found; entry points already loaded are skipped.
    A failing entry point is a one-line :class:`GraphrecError` naming it and its distribution.
    """
    if os.environ.get("GRAPHREC_DISABLE_ENTRY_POINTS", "").strip() not in ("", "0"):
        return
    for group, kind in ENTRY_POINT_GROUPS.items():
        registry = _REGISTRIES[kind]
        for ep in importlib.metadata.entry_points(group=group):
            key = (group, ep.name, ep.value)
            if key in _loaded_entry_points:
                continue
            try:
                obj = ep.load()
            except GraphrecError as exc:
                raise GraphrecError(f"{_ep_label(ep)} failed: {exc}") from None
            except Exception as exc:  # noqa: BLE001  (any import-time failure of third-party code)
                raise GraphrecError(
                    f"{_ep_label(ep)} failed to import: {type(exc).__name__}: {exc}; "
                    "fix or uninstall it (GRAPHREC_DISABLE_ENTRY_POINTS=1 skips plugins)"
                ) from None
            module = ep.value.split(":", 1)[0].strip()
            if isinstance(obj, type(sys)):  # a module: its decorators must have registered the name
                if ep.name not in registry:
                    raise GraphrecError(
                        f"{_ep_label(ep)} imported module '{module}' but it registers no {kind} named '{ep.name}'"
                    )
            elif isinstance(obj, type):
                if ep.name not in registry or registry.get(ep.name) is not obj:
                    try:
                        registry.register(ep.name, origin=module)(obj)
                    except GraphrecError as exc:
                        raise GraphrecError(f"{_ep_label(ep)}: {exc}") from None
            else:
                raise GraphrecError(f"{_ep_label(ep)} must point to a class or a module, not {type(obj).__name__}")
            dist = getattr(ep, "dist", None)
            if dist is not None and not registry.is_builtin(ep.name):
                registry._dists[ep.name] = dist.name
            _loaded_entry_points.add(key)


#: the name the extension docs use for loading installed plugins
load_plugins = load_entry_points


def ensure_cwd_importable() -> None:
    """Put the current directory on ``sys.path`` (as ``python -m`` does) and refresh import caches."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()


def _plugin_module_name(spec: str) -> str:
    """The module name of a ``--plugin`` value: a dotted name, or a ``.py`` file path.

    A file inside the current directory keeps its package path (``examples/attention_block.py``
    is ``examples.attention_block``); a file elsewhere (absolute, ``../``) is imported by its stem
    with its folder put on ``sys.path``.
    """
    name = spec.strip()
    if not (name.endswith(".py") or "/" in name or os.sep in name):
        return name
    path = Path(name).expanduser()
    if not path.is_file():
        raise GraphrecError(f"plugin file '{spec}' does not exist")
    path = path.resolve()
    try:
        rel = path.relative_to(Path.cwd().resolve())
        return ".".join(rel.with_suffix("").parts)
    except ValueError:
        pass
    stem, folder = path.stem, str(path.parent)
    loaded = sys.modules.get(stem)
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() != path:
        raise GraphrecError(f"plugin file '{spec}': a module named '{stem}' is already imported from elsewhere; rename the file")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return stem


def import_plugin(module: str) -> None:
    """Import the plugin module ``module``: a dotted name, or a ``.py`` file (relative, ``../`` or absolute).

    The current directory is put on ``sys.path`` first (so are the folders of files outside it).
    Any failure is a one-line :class:`GraphrecError`.
    """
    ensure_cwd_importable()
    name = _plugin_module_name(module)
    if not name or not all(part.isidentifier() for part in name.split(".")):
        raise GraphrecError(f"--plugin needs a module name such as 'examples.attention_block' or a .py file, got '{module}'")
    importlib.invalidate_caches()
    try:
        importlib.import_module(name)
    except GraphrecError as exc:
        raise GraphrecError(f"plugin module '{name}': {exc}") from None
    except Exception as exc:  # noqa: BLE001
        raise GraphrecError(f"plugin module '{name}' could not be imported: {type(exc).__name__}: {exc}") from None
    if name not in PLUGIN_MODULES:
        PLUGIN_MODULES.append(name)


def import_plugins(modules) -> None:
    """:func:`import_plugin` each of ``modules`` (after the built-ins, so plugins may reuse them)."""
    if not modules:
        return
    load_builtin()
    for m in modules:
        import_plugin(m)
