"""Workspace metadata: which keys to collect when, and what to report (pure core + runner).

Rules (coder-agent-rpc.md §5.7, §6.9, §6.10):

* A key is due when it was never collected, or when ``interval`` > 0 seconds have passed since
  its last collection started; ``interval`` 0 means collect once. At most one collection per
  key is in flight.
* Timeout: ``timeout`` s, else ``interval`` s, else 3 × the report tick, else 5 s.
* Output (stdout and stderr combined) over 10 240 bytes is cut, with an error note.
* A report carries only keys with a new result since the last report; the runner keeps at
  most one ``BatchUpdateMetadata`` in flight (entries go in field 2, ``metadata``), and at most
  one per report tick.
* The runner sleeps until :meth:`MetadataScheduler.next_due` or a result, never on a fixed tick:
  no wake-up while nothing is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import timestamp_pb2

from ..procprio import ChildPriority
from ..rpc.proto import agent_pb2

__all__ = ["MAX_OUTPUT", "MetadataScheduler", "Result", "collect", "report_request", "truncate"]

MAX_OUTPUT = 10_240


@dataclass
class Result:
    value: str
    error: str
    collected_at: dt.datetime


@dataclass
class _Key:
    key: str
    script: str
    interval: int
    timeout: int
    last_started: float | None = None
    in_flight: bool = False


class MetadataScheduler:
    """Pure: fed descriptions, times and results; says what to run and what to report."""

    def __init__(self, descriptions: Sequence[Mapping[str, Any]], tick: float = 1.0) -> None:
        self.tick = tick
        self.keys: dict[str, _Key] = {}
        for d in descriptions:
            k = str(d.get("key", ""))
            if k:
                self.keys[k] = _Key(k, str(d.get("script", "")), int(d.get("interval") or 0),
                                    int(d.get("timeout") or 0))
        self._new: dict[str, Result] = {}

    def due(self, now: float) -> list[str]:
        out = []
        for k in self.keys.values():
            if k.in_flight:
                continue
            if k.last_started is None or (k.interval > 0 and now - k.last_started >= k.interval):
                out.append(k.key)
        return out

    def next_due(self) -> float | None:
        """When the next key falls due (monotonic), ``None`` while none will without a result."""
        times = [0.0 if k.last_started is None else k.last_started + k.interval
                 for k in self.keys.values()
                 if not k.in_flight and (k.last_started is None or k.interval > 0)]
        return min(times) if times else None

    @property
    def has_new(self) -> bool:
        return bool(self._new)

    def started(self, key: str, now: float) -> None:
        k = self.keys[key]
        k.in_flight = True
        k.last_started = now

    def finished(self, key: str, result: Result) -> None:
        self.keys[key].in_flight = False
        self._new[key] = result

    def timeout_for(self, key: str) -> float:
        k = self.keys[key]
        return float(k.timeout or k.interval or 3 * self.tick or 5)

    def take_report(self) -> dict[str, Result]:
        out, self._new = self._new, {}
        return out

    def put_back(self, results: Mapping[str, Result]) -> None:
        """A report failed: keep its results for the next one (newer ones win)."""
        for k, v in results.items():
            self._new.setdefault(k, v)


def truncate(output: bytes) -> tuple[str, str]:
    """Cut output to :data:`MAX_OUTPUT` bytes; returns (value, error note)."""
    if len(output) <= MAX_OUTPUT:
        return output.decode("utf-8", "replace"), ""
    return (output[:MAX_OUTPUT].decode("utf-8", "ignore"),
            f"output truncated from {len(output)} to {MAX_OUTPUT} bytes")


def report_request(results: Mapping[str, Result]) -> agent_pb2.BatchUpdateMetadataRequest:
    req = agent_pb2.BatchUpdateMetadataRequest()
    for key, r in results.items():
        ts = timestamp_pb2.Timestamp()
        ts.FromDatetime(r.collected_at)
        req.metadata.append(agent_pb2.Metadata(
            key=key, result=agent_pb2.WorkspaceAgentMetadata.Result(collected_at=ts, value=r.value, error=r.error)))
    return req


def _existing(path: str | None) -> str | None:
    # The workspace directory may not exist yet (a clone still running): run from ours then.
    return path if path and os.path.isdir(path) else None


async def collect(argv: Sequence[str], timeout: float, env: Mapping[str, str], cwd: str | None,
                  priority: ChildPriority | None = None) -> Result:
    """Run one metadata command (``argv`` and the whole ``env`` from :mod:`coder_agent.childenv`:
    the login shell, or a ``#!`` script's own interpreter); never raises (errors go in the result)."""
    try:
        prio = priority or ChildPriority()
        proc = await asyncio.create_subprocess_exec(
            *prio.wrap(list(argv)), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=prio.env(env),
            cwd=_existing(cwd), start_new_session=True)
    except OSError as e:
        return Result("", f"start cmd: {e}", dt.datetime.now(dt.UTC))
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        return Result("", f"run cmd: timed out after {timeout:g} s", dt.datetime.now(dt.UTC))
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise
    value, note = truncate(out)
    error = note
    if proc.returncode:
        error = f"run cmd: exit status {proc.returncode}" + (f"; {note}" if note else "")
    return Result(value, error, dt.datetime.now(dt.UTC))
