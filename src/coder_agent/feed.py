"""A feed: the latest value of something, and who wants to hear of the next one.

An interface module (ARCHITECTURE.md). One capability publishes (the agent session publishes
each :class:`~coder_agent.manifest.Manifest` on a ``Feed[Manifest]``); others receive the feed
from the composition root and subscribe.

Rules:

* :meth:`Feed.publish` tells every subscriber, even when the value did not change (a reconnect
  brings the manifest again; a subscriber may care that it came).
* :meth:`Feed.clear` forgets the value (the agent session starts over) and tells subscribers
  ``None``, once.
* Subscribers are called synchronously, in subscription order; an exception in one is logged
  and does not stop the others. A new subscriber hears the current value at once (``replay``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from .log import get_logger

__all__ = ["Feed"]

T = TypeVar("T")


class Feed(Generic[T]):
    def __init__(self, name: str) -> None:
        self.name = name
        self._latest: T | None = None
        self._subscribers: list[Callable[[T | None], None]] = []
        self._log = get_logger("feed")

    @property
    def latest(self) -> T | None:
        return self._latest

    def subscribe(self, fn: Callable[[T | None], None], *, replay: bool = True) -> Callable[[], None]:
        """Call ``fn`` with every new value (at once with the current one if known and ``replay``).
        Returns the unsubscribe function."""
        self._subscribers.append(fn)
        if replay and self._latest is not None:
            fn(self._latest)

        def unsubscribe() -> None:
            if fn in self._subscribers:
                self._subscribers.remove(fn)

        return unsubscribe

    def publish(self, value: T) -> None:
        self._latest = value
        self._tell(value)

    def clear(self) -> None:
        if self._latest is None:
            return
        self._latest = None
        self._tell(None)

    def _tell(self, value: T | None) -> None:
        for fn in list(self._subscribers):
            try:
                fn(value)
            except Exception:
                self._log.exception("subscriber failed", feed=self.name)
