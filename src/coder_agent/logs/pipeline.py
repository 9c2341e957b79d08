"""The log pipeline: the daemon's :class:`~coder_agent.logsink.LogSink` and the shipper to coderd.

Rules:

* ``write()`` sanitises, splits multi-line output, and appends to the source's local file
  (:mod:`coder_agent.logs.files`) before it returns; nothing is kept in RAM — except when the
  log dir cannot be written (disk full): then the file's unwritten tail stays in memory, bounded,
  is shipped from there, and health and status say so (lines beyond the bound are dropped and
  counted). Once accepted, a line reaches Coder or stays on disk. The file is the
  queue: the shipper reads from it at the source's *cursor*, and the cursor (kept in the state
  dir as inode + offset) moves only after coderd acknowledged the batch. So an outage costs
  disk, not memory, and a restart resumes where shipping stopped. Cursor saves (an fsync each) happen
  after every acknowledged batch, but at most every 250 ms while batches stream back to back, and
  at once when the queue runs dry: a graceful restart repeats nothing, a crash repeats at most the
  batches of the last 250 ms (one batch when lines trickle in, as start scripts' do).
* One shipper per agent, one request in flight. Per source, lines go out in order; between
  sources, the batch that became due first goes first. A source is registered (POST
  /me/log-source) before its first batch in each process.
* Batches follow :class:`~coder_agent.logs.batch.Batcher` (Go's LogSender: up to 1 MiB, a
  source's lines go out 1 s after the oldest waiting one, at once on flush);
  failures keep the same batch and back off (:data:`coder_agent.retry.SHIP`): 5xx, dropped
  connections and timeouts never lose a line. A batch the server refuses as invalid (another
  4xx) is skipped with a warning; it stays in the local file.
* The 1 MiB cap (:class:`~coder_agent.logs.batch.CapAccountant`): the head of the output goes
  out as it comes until 64 KiB before the limit; there one notice line says where the complete
  logs are, and lines are no longer sent as they come (the local files go on). When a source
  *finishes* (:meth:`LogPipeline.finish`: a script's run ended; at daemon shutdown every
  source) its unsent lines are read back from the file and, within the source's share of the
  tail budget, its last lines go out after one line "… N bytes (M lines) not sent to Coder;
  the complete log is in PATH …" (:mod:`coder_agent.logs.tail`). One tail at a time, in the
  order sources finished; its cursor is saved after every tail batch, so a restart never sends
  a tail twice. Long-running sources (followed files, ``coder-agent log`` streams) get their
  tail only at shutdown, not periodically: every tail spends the budget for good, and repeated
  snapshots would leave gaps between them and starve sources that finish later.
  A 413 or the transport's limit flag stops shipping for good, with one warning. The cap state
  is persisted, so a restart does not start a 413 storm.
* The saved state belongs to one agent (:meth:`LogPipeline.set_agent`, the manifest's agent id):
  Coder's limit counts per agent, so when a different agent id arrives on the same state dir (a
  new build on a persistent disk) the cap accounting, the stop and the tails start over, every
  source registers again, and what earlier processes left unshipped stays in the local files only
  (lines this process wrote still go). A state saved without an agent id is adopted.
* ``flush()`` waits until what was written before the call was acknowledged, or shipping
  stopped, or the timeout passed (then the lines are safe on disk and will go later).
  ``finish()`` also waits for the source's tail when the head is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..clock import Clock, SystemClock
from ..errors import CoderAgentError
from ..log import Collapse, get_logger
from ..logsink import LogSource, source_id_for
from ..retention import Retention
from ..retry import SHIP, Backoff, Decision, classify
from ..service import Health
from ..state import StateStore
from .batch import (
    FLUSH_INTERVAL,
    MAX_BATCH_BYTES,
    MAX_BATCH_LINES,
    MAX_LOGS_LENGTH,
    CapAccountant,
    PackedBatch,
    PackedLines,
)
from .files import Reader, SourceFile, read_region
from .tail import TailCount, TailPlanner, tail_notice_text
from .text import DEFAULT_MAX_LINE, LEVELS, format_entry, format_time, parse_entry, sanitize, split_text
from .transport import Entry, LogTransport, SendResult

if TYPE_CHECKING:
    from ..metrics import Metrics

__all__ = ["LogPipeline"]

STATE_KEY = "logs-sources"
SAVE_EVERY = 0.25  # seconds between cursor saves while batches stream out
_RESERVED = {"coder-agent"}
_LEVEL_ALIASES = {"warning": "warn", "err": "error", "fatal": "error", "critical": "error"}


def _slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return s[:80] or "source"


def _output_bytes(raw: bytes) -> int | None:
    parsed = parse_entry(raw.decode("utf-8", "replace"))
    return None if parsed is None else len(parsed[2].encode("utf-8"))


def _output_size(e: Entry) -> int:
    return len(e.output.encode("utf-8"))


@dataclass(frozen=True)
class _Outgoing:
    """One batch as handed to the transport: ``first``, the packed lines as entries made one at a
    time as the request is built, ``last``. Iterable again (a transport may fall back from RPC to
    REST after reading it once)."""

    first: list[Entry]
    lines: PackedLines
    last: list[Entry]

    def __iter__(self) -> Iterator[Entry]:
        yield from self.first
        for raw in self.lines:  # markers were left out when the batch was filled: each line parses
            parsed = parse_entry(raw.decode("utf-8", "replace"))
            if parsed is not None:
                yield Entry(*parsed)
        yield from self.last


def normalize_level(level: str) -> str:
    lv = (level or "info").lower()
    lv = _LEVEL_ALIASES.get(lv, lv)
    return lv if lv in LEVELS else "info"


@dataclass
class _Source:
    src: LogSource
    file: SourceFile
    reader: Reader
    acked: int  # logical position acknowledged by coderd (or skipped on purpose)
    batch: PackedBatch  # the lines' bytes; entries: logical position after each line
    batch_end: int = 0  # logical position after the last line in the batch
    held: tuple[bytes, int, int] | None = None  # a line read that did not fit the batch: (bytes, size, end)
    registered: bool = False
    rejected: str | None = None
    flush_requested: bool = False
    written_lines: int = 0
    shipped_lines: int = 0
    persisted: int = -1
    finish_goal: int | None = None  # finish() asked for: ship up to here (a tail after the head)
    finish_seq: int = 0
    finish_final: bool = False
    tail_end: int | None = None  # the tail being sent ends here
    tail_start: int = 0
    process_start: int = 0  # logical position where this process started writing
    tail_notice: Entry | None = None  # "… N bytes not sent" line, sent before the tail's lines
    tails_sent: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class LogPipeline:
    name = "logs"

    def __init__(
        self,
        *,
        log_dir: Path,
        store: StateStore,
        transport: LogTransport,
        clock: Clock | None = None,
        cap_limit: int = MAX_LOGS_LENGTH,
        max_file_bytes: int = 32 << 20,
        backups: int = 8,
        retention: Retention | None = None,
        batch_lines: int = MAX_BATCH_LINES,
        batch_bytes: int = MAX_BATCH_BYTES,
        interval: float = FLUSH_INTERVAL,
        metrics: Metrics | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.metrics = metrics
        self.store = store
        self.transport = transport
        self.clock = clock or SystemClock()
        self.health = Health()
        self.cap = CapAccountant(limit=cap_limit)
        self._file_opts: dict[str, Any] = {"max_bytes": max_file_bytes, "backups": backups, "retention": retention}
        self._batch_opts = {"max_lines": batch_lines, "max_bytes": batch_bytes, "interval": interval}
        self._log = get_logger("logs")
        self._collapse = Collapse(self._log)
        self._sources: dict[str, _Source] = {}
        self._files_taken: dict[str, str] = {}  # file name -> source id
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._closed = False
        self._saved_at = 0.0
        self._finish_seq = 0
        self._ship_failing = False
        self._marker = f"coder-agent pid {os.getpid()} started at {format_time(self.clock.now())}"
        self.agent_id: str | None = None  # whose logs the saved state counts (None: not known yet)
        self._restore()

    # state ---------------------------------------------------------------------------------

    def _restore(self) -> None:
        doc = self.store.get(STATE_KEY, {})
        if not isinstance(doc, dict):
            return
        self.cap.load(doc.get("cap"))
        agent = doc.get("agent_id")
        self.agent_id = agent if isinstance(agent, str) and agent else None
        sources = doc.get("sources")
        if not isinstance(sources, dict):
            return
        for sid, info in sources.items():
            if not isinstance(info, dict) or not isinstance(info.get("file"), str):
                continue
            src = LogSource(str(sid), str(info.get("display_name") or sid), str(info.get("icon") or ""))
            ino, off = info.get("ino"), info.get("off")
            try:
                self._open(src, str(info["file"]), (ino, off) if isinstance(ino, int) and isinstance(off, int)
                           else None)
            except OSError as e:
                self._log.warning("cannot reopen a log source's file", source=src.display_name, error=str(e))

    def _save(self) -> None:
        sources = {}
        for s in self._sources.values():
            ino, off = s.file.disk_position(s.acked)
            sources[s.src.id] = {"display_name": s.src.display_name, "icon": s.src.icon,
                                 "file": s.file.path.name, "ino": ino, "off": off}
            s.persisted = s.acked
        try:
            self.store.put(STATE_KEY, {"sources": sources, "cap": self.cap.dump(), "agent_id": self.agent_id})
        except OSError as e:
            self._collapse.error("cannot save the log cursor", f"save:{e}", error=str(e))

    def _open(self, src: LogSource, file_name: str, cursor: tuple[int, int] | None) -> _Source:
        sf = SourceFile(self.log_dir / file_name, marker=self._marker, **self._file_opts)
        if cursor is None:
            acked = sf.total  # a new source: ship what is written from now on
        else:
            found = sf.locate(*cursor)
            if found is None:
                acked = sf.oldest
                self._log.warning("log cursor's file was rotated away; shipping from the oldest file kept",
                                  source=src.display_name, file=str(sf.path))
            else:
                acked = found
        s = _Source(src, sf, Reader(sf, acked), acked, PackedBatch(**self._batch_opts), batch_end=acked)
        s.persisted = acked if cursor is not None else -1
        s.process_start = sf.total
        self._sources[src.id] = s
        self._files_taken[file_name] = src.id
        if acked < sf.total:
            self._wake.set()
        return s

    # LogSink -------------------------------------------------------------------------------

    def source(self, display_name: str, icon: str = "", id: str | None = None) -> LogSource:
        sid = id or source_id_for(display_name)
        s = self._sources.get(sid)
        if s is not None:
            if (s.src.display_name, s.src.icon) != (display_name, icon):
                s.src = LogSource(sid, display_name, icon)
                s.registered = False
                self._save()
            return s.src
        name = _slug(display_name)
        if name in _RESERVED or self._files_taken.get(f"{name}.log", sid) != sid:
            name = f"{name}-{sid[:8]}"
        src = LogSource(sid, display_name, icon)
        self._open(src, f"{name}.log", None)
        self._save()  # before the first line, so a restart knows where this source starts
        return src

    def file_of(self, source: LogSource) -> Path | None:
        s = self._sources.get(source.id)
        return s.file.path if s else None

    def write(self, source: LogSource, output: str, level: str = "info",
              created_at: dt.datetime | None = None) -> None:
        self.write_lines(source, split_text(output) if ("\n" in output or "\r" in output) else [output],
                         level, created_at)

    def write_lines(self, source: LogSource, lines: Iterable[str], level: str = "info",
                    created_at: dt.datetime | None = None) -> None:
        """Append already split lines (no newline inside) with one timestamp and level."""
        s = self._sources.get(source.id)
        if s is None:
            self.source(source.display_name, source.icon, source.id)
            s = self._sources[source.id]
        ts = format_time(created_at or self.clock.now())
        lv = normalize_level(level)
        data = "".join([format_entry(ts, lv, sanitize(ln)) for ln in lines])
        if not data:
            return
        kept = s.file.write(data.encode("utf-8"))
        if s.file.write_error is not None or not kept:
            self._disk_trouble(s)
        if not kept:
            return
        s.written_lines += data.count("\n")
        self._wake.set()

    def _disk_trouble(self, s: _Source) -> None:
        f = s.file
        if f.dropped_lines:
            self._collapse.error("cannot write a log file and its memory buffer is full; dropping lines",
                                 f"drop:{s.src.id}", file=str(f.path), error=f.write_error,
                                 held_bytes=f.unwritten, limit=f.max_unwritten)
        else:
            self._collapse.error("cannot write a log file; keeping its lines in memory and shipping them from there",
                                 f"write:{s.src.id}:{f.write_error}", file=str(f.path), error=f.write_error)
        if not self._ship_failing:
            self._set_ok()

    def _set_ok(self) -> None:
        """Health when shipping works: ok, or degraded while a log file cannot be written."""
        bad = [x for x in self._sources.values() if x.file.write_error is not None or x.file.dropped_lines]
        if not bad:
            self.health.set("ok", "shipping" if self.cap.stopped is None else self._stopped_text())
            return
        held = sum(x.file.unwritten for x in bad)
        dropped = sum(x.file.dropped_lines for x in bad)
        err = next((x.file.write_error for x in bad if x.file.write_error), None)
        self.health.set("degraded", f"cannot write to {self.log_dir}" + (f" ({err})" if err else "")
                        + f": {held} bytes held in memory and shipped from there; {dropped} lines dropped")

    async def flush(self, source: LogSource | None = None, timeout: float | None = None) -> None:
        if source is None:
            targets = list(self._sources.values())
        else:
            one = self._sources.get(source.id)
            targets = [one] if one is not None else []
        goals = [(s, s.file.total) for s in targets]
        for s in targets:
            s.file.flush()
            s.flush_requested = True
        self._wake.set()

        def done() -> bool:
            if self._closed or self.cap.refused_by_server:
                return True
            for s, goal in goals:
                if s.rejected is not None or s.acked >= goal:
                    continue
                if self.cap.stopped is None or (s.finish_goal is not None and s.finish_goal >= goal):
                    return False  # head: not acknowledged yet; after the head: its tail is pending
            return True

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not done():
                    self._progress.clear()
                    await self._progress.wait()

    async def finish(self, source: LogSource | None = None, timeout: float | None = None,
                     final: bool = False) -> None:
        """The source's output is complete for now (a script's run ended; ``None``: every source,
        at daemon shutdown, with ``final``): flush it, and once the head is over send its tail.
        Waits like :meth:`flush` (bounded by ``timeout``)."""
        targets = list(self._sources.values()) if source is None else \
            [x for x in (self._sources.get(source.id),) if x is not None]
        for s in targets:
            goal = s.file.total
            if s.rejected is not None or goal <= s.acked:
                continue
            if s.finish_goal is None:
                self._finish_seq += 1
                s.finish_seq = self._finish_seq
            s.finish_goal = max(goal, s.finish_goal or 0)
            s.finish_final = s.finish_final or final
        await self.flush(source, timeout)

    # shipper -------------------------------------------------------------------------------

    def _fill(self, s: _Source) -> None:
        """Read lines from the file into the source's batch, while they fit."""
        now = self.clock.monotonic()
        b = s.batch
        while True:
            if s.held is not None:
                raw, n, end = s.held
                if not b.room_for(n):
                    return
                s.held = None
                b.add_line(raw, n, end, now)
                s.batch_end = end
                continue
            if b.full or (s.tail_end is not None and s.reader.pos >= s.tail_end):
                return
            got = s.reader.next_line()
            if got is None:
                return
            raw, end = got
            parsed = parse_entry(raw.decode("utf-8", "replace"))
            if parsed is None:  # a marker for people, or damage: nothing to send
                if not b.entries and s.tail_notice is None:
                    s.acked = end
                s.batch_end = end
                continue
            s.held = (raw, len(parsed[2].encode("utf-8")), end)

    def _next_due(self) -> tuple[_Source | None, float | None]:
        """The source whose batch is due (oldest first), else the earliest deadline."""
        now = self.clock.monotonic()
        best: _Source | None = None
        deadline: float | None = None
        head = self.cap.stopped is None
        for s in self._sources.values():
            if s.rejected is not None or not (head or s.tail_end is not None):
                continue
            self._fill(s)
            b = s.batch
            if not b.entries and s.tail_notice is None:
                s.flush_requested = False
                self._settle(s)
                if s.tail_end is not None and s.reader.pos >= s.tail_end:
                    s.acked = max(s.acked, s.tail_end)  # only markers were left
                    self._tail_done(s)
                continue
            if s.tail_end is not None or b.due(now, s.flush_requested or s.finish_goal is not None):
                if best is None or (b.first_at or 0) < (best.batch.first_at or 0):
                    best = s
            else:
                d = b.deadline()
                if d is not None and (deadline is None or d < deadline):
                    deadline = d
        return best, deadline

    async def run(self) -> None:
        """The shipper loop (the ``logs`` service)."""
        self.health.set("ok", "shipping" if self.cap.stopped is None else self._stopped_text())
        backoff = Backoff(SHIP)
        while True:
            if self.cap.refused_by_server or (self.cap.stopped is not None and not await self._tail_step()):
                for x in self._sources.values():
                    x.file.flush()
                self._progress.set()
                await self._idle(1.0)
                continue
            s, deadline = self._next_due()
            if s is None:
                if any(x.acked != x.persisted for x in self._sources.values()):
                    self._save()  # nothing due: make every acknowledged position durable now
                for x in self._sources.values():
                    x.file.flush()
                if not self._ship_failing:
                    self._set_ok()  # the disk may have room again
                wait: float | None = max(0.0, deadline - self.clock.monotonic()) if deadline is not None else None
                if wait is None and any(x.file.write_error is not None or x.file.unwritten
                                        for x in self._sources.values()):
                    wait = 1.0  # a file cannot be written: retry it every second
                await self._idle(wait)  # else nothing is due: a write or a flush wakes us (no idle tick)
                continue
            try:
                await self._ship(s)
            except CoderAgentError as e:
                decision = classify(e)
                text = str(e)
                if decision is Decision.FATAL:
                    self._log.warning("coderd refused a log batch; it stays in the local file",
                                      source=s.src.display_name, error=text, file=str(s.file.path))
                    self._skip_batch(s)
                    continue
                self._ship_failing = True
                self.health.set("degraded", f"cannot ship logs: {text}")
                self._collapse.error("cannot ship logs; retrying with the same batch", text, error=text,
                                     source=s.src.display_name)
                await self.clock.sleep(backoff.next_delay())
                continue
            backoff.success(self.clock.monotonic())
            self._ship_failing = False
            self._set_ok()
            self._collapse.ok("log shipping recovered")

    async def _idle(self, seconds: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        self._wake.clear()

    async def _ship(self, s: _Source) -> None:
        if not s.registered:
            try:
                await self.transport.register(s.src)
            except CoderAgentError as e:
                if classify(e) is Decision.FATAL:
                    s.rejected = str(e)
                    self._log.warning("coderd refused a log source; its lines stay in the local file",
                                      source=s.src.display_name, error=str(e), file=str(s.file.path))
                    self._progress.set()
                    return
                raise
            s.registered = True
        b = s.batch
        ends, sizes = b.entries, b.sizes
        tail = s.tail_end is not None
        extra: list[Entry] = []  # the tail's "not sent" line first, or the head's cap notice last
        if tail:
            first = [s.tail_notice] if s.tail_notice is not None else []
            fits = self.cap.plan_tail([*map(_output_size, first), *sizes])
            n, notice = max(0, fits - len(first)), False
            extra = first if fits else []
        else:
            plan = self.cap.plan(sizes)
            n, notice = plan.send, plan.notice
            if notice:
                extra = [self._notice(s, sum(sizes[:n]))]
        if n or extra:
            send = _Outgoing(extra, b.lines(n), []) if tail else _Outgoing([], b.lines(n), extra)
            t0 = time.perf_counter()
            result = await self.transport.send(s.src.id, send)
            if self.metrics is not None:
                self.metrics.observe("log_batch_ack_seconds", time.perf_counter() - t0,
                                     "log batches: time until coderd acknowledged them")
        else:
            result = SendResult.ACCEPTED
        if result is SendResult.LIMIT_EXCEEDED:
            self._refused()
            return
        self.cap.acknowledged(sum(sizes[:n]) + sum(_output_size(e) for e in extra), notice)
        s.shipped_lines += n
        if tail:
            if s.tail_notice is not None and extra:
                s.tail_notice = None
                s.acked = max(s.acked, s.tail_start)
            if n == len(ends):
                s.batch.take()
                s.acked = max(s.acked, s.batch_end)
            else:  # cannot happen with a planned tail; never risk a 413 for it
                if n:
                    s.acked = ends[n - 1]
                self._log.warning("a log tail did not fit what is left of Coder's limit; the rest stays local",
                                  source=s.src.display_name, file=str(s.file.path))
                s.acked = max(s.acked, s.tail_end or s.acked)
                s.batch.take()
                s.held = None
            if s.tail_end is not None and s.acked >= s.tail_end:
                self._tail_done(s)
            self._save()  # a tail spends the budget for good: never send it twice
        elif notice:
            if n:
                s.acked = ends[n - 1]
            self._settle(s)
            self._stop_everywhere(s)
            self._save()
        else:
            s.batch.take()
            s.acked = s.batch_end
            self._settle(s)
            self._maybe_save()
        self._progress.set()

    def _settle(self, s: _Source) -> None:
        """A finish request that the acknowledged position has reached is done."""
        if s.finish_goal is not None and s.acked >= s.finish_goal and s.tail_end is None:
            s.finish_goal = None
            s.finish_final = False

    # tails ---------------------------------------------------------------------------------

    async def _tail_step(self) -> bool:
        """After the head: True when a tail is being sent (the normal loop ships it); else starts
        the next one in finishing order, or returns False when none waits."""
        if any(x.tail_end is not None for x in self._sources.values()):
            return True
        while True:
            waiting = [x for x in self._sources.values() if x.finish_goal is not None and x.rejected is None]
            for x in waiting:
                self._settle(x)
            waiting = [x for x in waiting if x.finish_goal is not None]
            if not waiting:
                return False
            s = min(waiting, key=lambda x: x.finish_seq)
            final = s.finish_final
            share = self.cap.tail_share(sum(1 for x in waiting if x.finish_final == final) if final
                                        else len(waiting), final)
            if await self._plan_tail(s, share):
                return True
            s.finish_goal = None  # nothing to send (or no budget left): the lines stay local
            s.finish_final = False
            self._progress.set()

    async def _plan_tail(self, s: _Source, share: int) -> bool:
        """Choose the last lines of ``[acked, finish_goal)`` that fit ``share`` and set the source up to
        send them after the "not sent" line. False when there is nothing to send."""
        assert s.finish_goal is not None
        end = s.finish_goal
        path = str(s.file.path)
        worst = len(tail_notice_text(TailCount(10**15, 10**15), path).encode("utf-8"))
        budget = share - worst
        if budget <= 0 or end <= s.acked:
            return False
        planner = TailPlanner(end, budget, DEFAULT_MAX_LINE, _output_bytes)
        for pos, block in read_region(s.file, s.acked, end):
            planner.feed(pos, block)
            await asyncio.sleep(0)  # a long region is read in blocks; let the daemon breathe between them
        counted, start = planner.skipped, planner.start
        s.reader.close()
        s.reader = Reader(s.file, start)
        s.batch.take()
        s.held = None
        s.batch_end = start
        s.tail_start, s.tail_end = start, end
        s.tail_notice = None
        if counted.lines or counted.bytes:
            s.tail_notice = Entry(format_time(self.clock.now()), "warn", sanitize(tail_notice_text(counted, path)))
            self._log.info("sending the last lines of a log source after Coder's log limit",
                           source=s.src.display_name, not_sent_bytes=counted.bytes, not_sent_lines=counted.lines,
                           tail_lines=planner.kept, file=path)
        elif start >= end:  # no entries at all (markers only)
            s.tail_end = None
            s.acked = end
            self._save()
            return False
        self._wake.set()
        return True

    def _tail_done(self, s: _Source) -> None:
        s.tail_end = None
        s.tail_notice = None
        s.tails_sent += 1
        self._settle(s)
        self._progress.set()

    def _maybe_save(self) -> None:
        """Persist cursors after an ack, at most every SAVE_EVERY seconds while batches stream out
        (each save is an fsync); the idle loop saves the rest at once."""
        now = self.clock.monotonic()
        if now - self._saved_at >= SAVE_EVERY:
            self._saved_at = now
            self._save()

    def _skip_batch(self, s: _Source) -> None:
        s.batch.take()
        s.acked = s.batch_end
        s.tail_notice = None
        if s.tail_end is not None and s.acked >= s.tail_end:
            self._tail_done(s)
        self._settle(s)
        self._save()
        self._progress.set()

    def _notice(self, s: _Source, planned: int) -> Entry:
        limit = self.cap.limit
        text = (f"coder-agent: this agent's logs are close to Coder's limit of {limit} bytes, so the rest of "
                f"this output and of every other log source is not sent as it comes; when a source finishes, "
                f"its last lines are sent. The complete log is kept on the workspace in {s.file.path} "
                f"(all sources: {self.log_dir}).")
        room = self.cap.notice_room() - planned
        raw = text.encode("utf-8")[:max(0, room)]
        return Entry(format_time(self.clock.now()), "warn", sanitize(raw.decode("utf-8", "ignore")))

    def _stop_everywhere(self, s: _Source) -> None:
        self._log.warning("Coder's log limit for this agent is near; from now on only each source's last lines "
                          "are sent, when it finishes; local files go on",
                          limit=self.cap.limit, accepted=self.cap.accepted, log_dir=str(self.log_dir))
        for x in self._sources.values():
            x.batch.take()
            x.held = None
            with contextlib.suppress(OSError):
                x.file.write(b"# coder-agent: Coder's 1 MiB log limit is near: lines below go to Coder only as "
                             b"the last lines of their source when it finishes\n")
        self.health.set("ok", self._stopped_text())

    def _refused(self) -> None:
        if self.cap.refused("413" if self.transport.name == "rest" else "limit_exceeded"):
            self._log.warning("coderd refused more logs for this agent (log limit exceeded); shipping stopped, "
                              "local files go on", log_dir=str(self.log_dir))
        for x in self._sources.values():
            x.batch.take()
            x.held = None
            x.tail_end = x.tail_notice = x.finish_goal = None
        self.health.set("ok", self._stopped_text())
        self._save()
        self._progress.set()

    def _stopped_text(self) -> str:
        return {"cap": "near Coder's 1 MiB log limit: only each source's last lines are sent, when it finishes; "
                       "complete logs are in the local files",
                "413": "coderd refused more logs (limit exceeded); complete logs are in the local files",
                "limit_exceeded": "coderd refused more logs (limit exceeded); complete logs are in the local files",
                }.get(self.cap.stopped or "", "")

    def limit_exceeded(self) -> None:
        """The transport learned out of band that the agent's log limit was exceeded."""
        if self.cap.refused("limit_exceeded"):
            self._log.warning("coderd reports the log limit exceeded; shipping stopped, local files go on")
        self._save()
        self._progress.set()

    def set_agent(self, agent_id: str) -> None:
        """The manifest's agent id: state saved for another agent starts over (module rules)."""
        if not agent_id or agent_id == self.agent_id:
            return
        previous, self.agent_id = self.agent_id, agent_id
        if previous is None:  # a fresh state dir, or one saved before agents were told apart
            self._save()
            return
        self._log.info("a new agent on this state dir: log limit accounting starts over",
                       previous_agent=previous, agent=agent_id)
        self.cap = CapAccountant(limit=self.cap.limit)
        for s in self._sources.values():
            start = max(s.acked, s.process_start)
            s.reader.close()
            s.reader = Reader(s.file, start)
            s.acked = s.batch_end = start
            s.batch = PackedBatch(**self._batch_opts)
            s.held = None
            s.registered = False
            s.rejected = None
            s.tail_end = s.tail_notice = s.finish_goal = None
            s.tails_sent = 0
        self.health.set("ok", "")
        self._save()
        self._wake.set()
        self._progress.set()

    def new_session(self) -> None:
        """A new agent session (prebuild reinit): register every source again before its next
        batch, as a new agent instance would (the claim may come with a new token or agent)."""
        for s in self._sources.values():
            s.registered = False

    async def drain(self) -> None:
        """Graceful stop: ship what is waiting and every overflowed source's tail (bounded)."""
        await self.finish(timeout=5.0, final=True)

    def close(self) -> None:
        self._closed = True
        for s in self._sources.values():
            s.reader.close()
            s.file.close()
        if any(s.acked != s.persisted for s in self._sources.values()):
            self._save()
        self._progress.set()

    # status --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "transport": self.transport.name,
            "log_dir": str(self.log_dir),
            "cap_bytes": self.cap.limit,
            "server_accepted_bytes": self.cap.accepted,
            "shipping_stopped": self.cap.stopped,
            "shipping_stopped_reason": self._stopped_text() or None,
            "tail_reserve_bytes": self.cap.tail_reserve,
            "sources": [
                {"id": s.src.id, "display_name": s.src.display_name, "file": str(s.file.path),
                 "accepted_lines": s.written_lines, "shipped_lines": s.shipped_lines,
                 "pending_bytes": max(0, s.file.total - s.acked), "registered": s.registered,
                 "rejected": s.rejected, "tails_sent": s.tails_sent, "write_error": s.file.write_error,
                 "unwritten_bytes": s.file.unwritten, "dropped_lines": s.file.dropped_lines}
                for s in self._sources.values()
            ],
        }
