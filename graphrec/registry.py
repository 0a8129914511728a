"""Name -> class registries for models and blocks.

``MODELS`` maps names such as ``"dgmrec"`` to :class:`graphrec.models.base.RecModel`
subclasses; ``BLOCKS`` maps names such as ``"lightgcn_conv"`` to message-passing
``nn.Module`` classes. Register with the decorators::

    @register_block("my_conv")
    class MyConv(nn.Module): ...

Unknown names raise :class:`GraphrecError` listing the known ones.
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from graphrec.errors import GraphrecError

T = TypeVar("T")


class Registry(Generic[T]):
    """A case-sensitive mapping from names to registered objects of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering an object under ``name`` (re-registering the same object is a no-op)."""

        def decorator(obj: T) -> T:
            existing = self._items.get(name)
            if existing is not None and existing is not obj and getattr(existing, "__qualname__", None) != getattr(
                obj, "__qualname__", object()
            ):
                raise GraphrecError(f"{self.kind} name '{name}' is already registered by {existing!r}; pick another name")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """Return the object registered as ``name`` or raise a one-line error listing the known names."""
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise GraphrecError(
                f"unknown {self.kind} '{name}'{hint}; known {self.kind}s: {', '.join(sorted(self._items)) or 'none'}"
            ) from None

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


def load_builtin() -> None:
    """Import the built-in models and blocks so that they are registered."""
    import graphrec.blocks  # noqa: F401
    import graphrec.models  # noqa: F401
