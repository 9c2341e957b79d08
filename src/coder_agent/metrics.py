"""Prometheus metrics in the text exposition format, without a client library.

Rules: counters and gauges only, registered by name on a :class:`Metrics` instance that the
daemon passes to whoever needs it (no global registry); label values are escaped.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Metrics"]


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    def __init__(self, prefix: str = "coder_agent") -> None:
        self.prefix = prefix
        self._help: dict[str, tuple[str, str]] = {}
        self._values: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        self._callbacks: dict[str, Callable[[], float]] = {}

    def _declare(self, name: str, kind: str, help_text: str) -> str:
        full = f"{self.prefix}_{name}"
        self._help.setdefault(full, (kind, help_text))
        self._values.setdefault(full, {})
        return full

    def inc(self, name: str, amount: float = 1.0, help_text: str = "", **labels: str) -> None:
        full = self._declare(name, "counter", help_text)
        key = tuple(sorted(labels.items()))
        self._values[full][key] = self._values[full].get(key, 0.0) + amount

    def set(self, name: str, value: float, help_text: str = "", **labels: str) -> None:
        full = self._declare(name, "gauge", help_text)
        self._values[full][tuple(sorted(labels.items()))] = value

    def gauge_fn(self, name: str, fn: Callable[[], float], help_text: str = "") -> None:
        full = self._declare(name, "gauge", help_text)
        self._callbacks[full] = fn

    def render(self) -> str:
        lines: list[str] = []
        for full, (kind, help_text) in sorted(self._help.items()):
            if help_text:
                lines.append(f"# HELP {full} {help_text}")
            lines.append(f"# TYPE {full} {kind}")
            if full in self._callbacks:
                try:
                    lines.append(f"{full} {self._callbacks[full]()}")
                except Exception:  # a broken gauge must not break the scrape
                    continue
            for key, v in sorted(self._values[full].items()):
                lbl = ",".join(f'{k}="{_esc(x)}"' for k, x in key)
                lines.append(f"{full}{{{lbl}}} {v}" if lbl else f"{full} {v}")
        return "\n".join(lines) + "\n"
