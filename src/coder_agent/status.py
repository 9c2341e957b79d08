"""The extra keys of ``GET /api/v0/status``: each capability registers a key and a function.

An interface module (ARCHITECTURE.md): capabilities receive a :class:`StatusRegistry` from the
composition root instead of writing into a dict on the daemon. A key's function is called on
every status request and returns JSON-ready data. Registering a key again replaces it (the
agent session takes over ``scripts`` from the config-only scripts session).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

__all__ = ["StatusFn", "StatusRegistry"]

StatusFn = Callable[[], object]


class StatusRegistry:
    def __init__(self) -> None:
        self._keys: dict[str, StatusFn] = {}

    def add(self, key: str, fn: StatusFn) -> None:
        """Show ``fn()`` under ``key`` (replacing any earlier function for that key)."""
        self._keys[key] = fn

    def collect(self) -> Iterator[tuple[str, object]]:
        """Each key with its current value, in registration order."""
        for key, fn in list(self._keys.items()):
            yield key, fn()
