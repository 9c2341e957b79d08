"""Prometheus metrics: a small facade over prometheus_client with one registry per daemon.

Rules:

* No global registry: each :class:`Metrics` owns a ``CollectorRegistry``; the daemon passes its
  instance to whoever records (tests can run several daemons in one process).
* Series are declared on first use, by name without the ``coder_agent_`` prefix: ``inc`` makes a
  counter, ``set``/``gauge_fn`` a gauge, ``observe`` a histogram (latencies, in seconds). A name
  keeps the label names of its first use.
* The registry also holds the library's process collector (CPU, memory, file descriptors of
  this process) and platform collector (the Python version).
* ``render()`` is the text exposition (``generate_latest``). A gauge callback that raises reads
  as NaN: a broken gauge must not break the scrape.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Seconds: a loopback round-trip is ~1 ms, a slow coderd answer several seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, prefix: str = "coder_agent") -> None:
        self.prefix = prefix
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._series: dict[str, Any] = {}

    def _get(self, kind: type[Any], name: str, help_text: str, labels: dict[str, str], **kw: Any) -> Any:
        metric = self._series.get(name)
        if metric is None:
            metric = kind(name, help_text or name.replace("_", " "), labelnames=sorted(labels),
                          namespace=self.prefix, registry=self.registry, **kw)
            self._series[name] = metric
        return metric.labels(**labels) if labels else metric

    def inc(self, name: str, amount: float = 1.0, help_text: str = "", **labels: str) -> None:
        self._get(Counter, name, help_text, labels).inc(amount)

    def set(self, name: str, value: float, help_text: str = "", **labels: str) -> None:
        self._get(Gauge, name, help_text, labels).set(value)

    def gauge_fn(self, name: str, fn: Callable[[], float], help_text: str = "") -> None:
        def read() -> float:
            try:
                return float(fn())
            except Exception:
                return math.nan

        self._get(Gauge, name, help_text, {}).set_function(read)

    def observe(self, name: str, seconds: float, help_text: str = "", **labels: str) -> None:
        """A latency in seconds, into the histogram ``name`` (buckets: :data:`LATENCY_BUCKETS`)."""
        self._get(Histogram, name, help_text, labels, buckets=LATENCY_BUCKETS).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
