"""One small Registry class and one registry per plugin kind.

A component registers itself next to its definition::

    @ENCODERS.register("transformer")
    class TransformerEncoder(nn.Module): ...

and is built by name with ``ENCODERS.get("transformer")(config)``. Command-line ``choices=`` come from
``REGISTRY.names()``, so the registry is the single source of truth for what exists.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Generic, TypeVar

from tencentpretrain.errors import UnknownComponentError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table for one plugin kind (embeddings, encoders, ...)."""

    def __init__(self, kind: str, *, package: str | None = None) -> None:
        """Args:
        kind: human-readable plural used in error messages ("encoder").
        package: a package whose modules define the entries; imported on first lookup so that
            every component file has registered itself before names are listed.
        """
        self.kind = kind
        self._package = package
        self._entries: dict[str, T] = {}
        self._loaded = package is None

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that adds ``obj`` under ``name``; a duplicate name is an error."""

        def add(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"duplicate {self.kind} {name!r}: already registered as {self._entries[name]!r}")
            self._entries[name] = obj
            return obj

        return add

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            importlib.import_module(self._package)

    def get(self, name: str) -> T:
        """Return the entry called ``name``; an unknown name raises an error listing the close matches."""
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownComponentError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        """The text of the error for an unknown ``name``: the close matches and every registered name."""
        self._load()
        close = difflib.get_close_matches(str(name), self._entries, n=3, cutoff=0.5)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; registered: {', '.join(self.names())}"

    def names(self) -> list[str]:
        """All registered names, sorted."""
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries


EMBEDDINGS: Registry = Registry("embedding", package="tencentpretrain.embeddings")
ENCODERS: Registry = Registry("encoder", package="tencentpretrain.encoders")
DECODERS: Registry = Registry("decoder", package="tencentpretrain.decoders")
TARGETS: Registry = Registry("target", package="tencentpretrain.targets")
LAYERNORMS: Registry = Registry("layer norm", package="tencentpretrain.layers")
FEEDFORWARDS: Registry = Registry("feed-forward", package="tencentpretrain.layers")
ACTIVATIONS: Registry = Registry("activation", package="tencentpretrain.layers")
TOKENIZERS: Registry = Registry("tokenizer", package="tencentpretrain.tokenizers")
DATA_PROCESSORS: Registry = Registry("data processor", package="tencentpretrain.data.processors")
OPTIMIZERS: Registry = Registry("optimizer", package="tencentpretrain.training.optimizers")
SCHEDULERS: Registry = Registry("scheduler", package="tencentpretrain.training.schedulers")


def import_submodules(package_name: str) -> None:
    """Import every module of a package, so that each component file registers itself.

    A package's ``__init__`` calls this; adding a component is then one new file, with no list to edit.
    """
    import pkgutil

    package = importlib.import_module(package_name)
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package_name}.{info.name}")
