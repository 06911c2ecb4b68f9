"""A small name -> component registry (one instance per kind of component)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any


class Registry:
    """Maps names used in configs to classes or factory functions.

    Args:
        kind: what the registry holds ("loss", "hook", ...); used in error messages.

    Example:
        >>> LOSSES = Registry("loss")
        >>> @LOSSES.register("softmax")
        ... class SoftmaxLoss: ...
        >>> LOSSES.get("softmax")
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._cfg_kwargs: dict[str, Callable[[Any], dict]] = {}

    def register(
        self, name: str, cfg_kwargs: Callable[[Any], dict] | None = None
    ) -> Callable[[Any], Any]:
        """Decorator registering ``obj`` under ``name``.

        Args:
            name: the name a config uses.
            cfg_kwargs: maps a config node to the keyword arguments of ``obj``
                (the one place where cfg is read for this component).
        """

        def _do(obj: Any) -> Any:
            self.add(name, obj, cfg_kwargs)
            return obj

        return _do

    def add(self, name: str, obj: Any, cfg_kwargs: Callable[[Any], dict] | None = None) -> None:
        """Register ``obj`` under ``name`` (not as a decorator)."""
        if name in self._entries and self._entries[name] is not obj:
            raise KeyError(f"{self.kind} name {name!r} is already registered to {self._entries[name]!r}")
        self._entries[name] = obj
        self._cfg_kwargs[name] = cfg_kwargs or (lambda cfg: {})

    def get(self, name: str) -> Any:
        """Return the component registered as ``name``; unknown names list the known ones."""
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3)
            hint = f" Did you mean {close}?" if close else ""
            raise KeyError(
                f"unknown {self.kind} name {name!r}.{hint} Known {self.kind} names: {sorted(self._entries)}"
            )
        return self._entries[name]

    def kwargs_from_cfg(self, name: str, cfg: Any) -> dict:
        """Keyword arguments of component ``name`` read from ``cfg``."""
        self.get(name)
        return dict(self._cfg_kwargs[name](cfg))

    def names(self) -> list[str]:
        """Sorted list of registered names."""
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
