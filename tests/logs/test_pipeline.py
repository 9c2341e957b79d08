"""The pipeline against the devserver: order, faults, one request in flight, the cap, restarts."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import structlog

from coder_agent.devserver import DevServer, Fault
from coder_agent.logs.batch import TAIL_RESERVE
from coder_agent.logs.text import parse_entry

from ..conftest import apoll, t
from .conftest import Running, outputs

PATCH = "PATCH /api/v2/workspaceagents/me/logs"


async def test_lines_arrive_in_order_one_request_in_flight(devserver: DevServer, pipe: Running) -> None:
    p = await pipe.start()
    src = p.source("Setup", icon="/icon/x.svg")
    for i in range(1000):
        p.write(src, f"line {i}")
    await p.flush(src, timeout=t(20))
    assert outputs(devserver, src.id) == [f"line {i}" for i in range(1000)]
    assert devserver.agent.log_sources[src.id]["display_name"] == "Setup"
    assert devserver.state.max_in_flight[PATCH] == 1
    # batches as Go's LogSender: up to 1 MiB (21 bytes of overhead a line), so 1000 lines written
    # at once are one request; registration before the first batch
    patches = devserver.requests_to("/me/logs", "PATCH")
    assert len(patches) == 1
    assert all(sum(len(x["output"].encode()) + 21 for x in r.body["logs"]) <= 1 << 20 for r in patches)
    first_patch = devserver.state.requests.index(patches[0])
    assert any(r.path.endswith("/log-source") for r in devserver.state.requests[:first_patch])
    for r in patches:
        for log in r.body["logs"]:
            assert log["level"] == "info" and log["created_at"].endswith("Z")


async def test_5xx_storm_and_dropped_connections_lose_nothing(devserver: DevServer, pipe: Running) -> None:
    p = await pipe.start()
    src = p.source("storm")
    for i in range(150):
        p.write(src, f"a{i}")
    await p.flush(src, timeout=t(10))
    devserver.add_fault(Fault(path="/me/logs$", status=503, count=2))
    devserver.add_fault(Fault(path="/me/logs$", drop=True, count=1))
    for i in range(300):
        p.write(src, f"b{i}")
    await p.flush(src, timeout=t(40))
    want = [f"a{i}" for i in range(150)] + [f"b{i}" for i in range(300)]
    assert outputs(devserver, src.id) == want
    assert devserver.state.max_in_flight[PATCH] == 1
    failed = [r for r in devserver.requests_to("/me/logs", "PATCH") if r.status != 200]
    assert len(failed) >= 2  # the faults really hit
    # a retried batch is the identical batch
    bodies = [r.body for r in devserver.requests_to("/me/logs", "PATCH")]
    for i, r in enumerate(devserver.requests_to("/me/logs", "PATCH")):
        if r.status != 200:
            assert bodies[i + 1] == r.body


async def test_413_warns_once_and_stops_requests(devserver: DevServer, pipe: Running) -> None:
    devserver.add_fault(Fault(path="/me/logs$", status=413, message="Logs limit exceeded"))
    with structlog.testing.capture_logs() as events:
        p = await pipe.start()
        src = p.source("big")
        for i in range(50):
            p.write(src, f"x{i}")
        await p.flush(src, timeout=t(10))
        for i in range(500):
            p.write(src, f"y{i}")
        await p.flush(src, timeout=t(5))
        n = len(devserver.requests_to("/me/logs", "PATCH"))
        await asyncio.sleep(0.8)  # several shipper ticks: a retry would show up
    assert n == 1
    assert len(devserver.requests_to("/me/logs", "PATCH")) == 1
    warnings = [e for e in events if e["log_level"] == "warning" and "limit" in e["event"]]
    assert len(warnings) == 1
    assert p.status()["shipping_stopped"] == "413"
    # the local file still has every line
    lines = [parse_entry(ln) for ln in (p.file_of(src).read_text().splitlines())]  # type: ignore[union-attr]
    assert [x[2] for x in lines if x] == [f"x{i}" for i in range(50)] + [f"y{i}" for i in range(500)]


async def test_invalid_utf8_and_nul_arrive_sanitised(devserver: DevServer, pipe: Running) -> None:
    p = await pipe.start()
    src = p.source("bytes")
    p.write(src, "nul\x00here")
    p.write(src, "lone \udcff surrogate")
    p.write(src, "two\r\nlines")
    await p.flush(src, timeout=t(10))
    assert outputs(devserver, src.id) == ["nul❌here", "lone ❌ surrogate", "two", "lines"]


NOT_SENT = re.compile(r"^… (\d+) bytes \((\d+) lines\) not sent to Coder; the complete log is in (.+) …$")


def _entries(path: Path) -> list[str]:
    return [e[2] for ln in path.read_text().splitlines() if (e := parse_entry(ln))]


async def test_head_notice_then_tail_when_the_source_finishes(devserver: DevServer, pipe: Running) -> None:
    p = await pipe.start()
    src = p.source("chatty")
    want = [f"{i:06d} " + "z" * 993 for i in range(1500)]  # ~1.5 MB
    for ln in want:
        p.write(src, ln)
    await p.flush(src, timeout=t(30))
    out = outputs(devserver, src.id)
    assert out[-1].startswith("coder-agent: this agent's logs are close to Coder's limit")
    assert str(p.file_of(src)) in out[-1]
    head = out[:-1]
    assert head == want[:len(head)]
    assert devserver.agent.logs_length <= 1_048_576 - TAIL_RESERVE  # the tail's part is intact
    assert p.status()["shipping_stopped"] == "cap"
    n_before = len(devserver.requests_to("/me/logs", "PATCH"))
    await asyncio.sleep(0.6)  # lines are no longer sent as they come
    assert len(devserver.requests_to("/me/logs", "PATCH")) == n_before

    await p.finish(src, timeout=t(20))
    out = outputs(devserver, src.id)
    m = NOT_SENT.match(out[len(head) + 1])
    assert m, out[len(head) + 1]
    tail = out[len(head) + 2:]
    assert tail and tail == want[-len(tail):]  # the exact last lines, in order
    skipped = want[len(head):-len(tail)]
    assert (int(m[1]), int(m[2]), m[3]) == (sum(len(x) for x in skipped), len(skipped), str(p.file_of(src)))
    assert 16_000 <= sum(len(x) for x in tail) <= TAIL_RESERVE  # a real share of the reserve
    assert devserver.agent.logs_length <= 1_048_576
    assert not devserver.agent.logs_overflowed
    assert all(r.status == 200 for r in devserver.requests_to("/me/logs", "PATCH"))
    st = p.status()
    assert st["server_accepted_bytes"] == devserver.agent.logs_length
    assert st["sources"][0]["pending_bytes"] == 0 and st["sources"][0]["tails_sent"] == 1
    assert _entries(p.file_of(src)) == want  # type: ignore[arg-type]  # the local copy is complete


async def test_tail_state_survives_a_restart_and_shutdown_shares_the_rest(devserver: DevServer,
                                                                          pipe: Running) -> None:
    p = await pipe.start()
    a, b = p.source("first"), p.source("second")
    for i in range(1100):
        p.write(a, f"a{i:05d} " + "x" * 993)
    await p.finish(a, timeout=t(30))
    out_a = outputs(devserver, a.id)
    assert sum(1 for o in out_a if NOT_SENT.match(o)) == 1 and out_a[-1] == "a01099 " + "x" * 993
    sent = len(devserver.agent.logs)
    await pipe.stop()

    p = await pipe.start()  # restart: the cap and the cursors are where they were
    assert p.status()["shipping_stopped"] == "cap"
    await p.finish(timeout=t(10), final=True)
    assert len(devserver.agent.logs) == sent  # no tail is sent twice
    for i in range(300):
        p.write(a, f"late-a{i}")
        p.write(b, f"b{i} " + "y" * 200)
    await p.drain()  # daemon shutdown: every source's tail, sharing what is left
    late_a, late_b = outputs(devserver, a.id)[len(out_a):], outputs(devserver, b.id)
    assert NOT_SENT.match(late_b[0]) and late_b[-1] == "b299 " + "y" * 200
    assert late_a == [f"late-a{i}" for i in range(300)]  # its whole share fits: no "not sent" line
    assert devserver.agent.logs_length <= 1_048_576 and not devserver.agent.logs_overflowed
    left = 1_048_576 - devserver.agent.logs_length
    assert left < 4096  # the shutdown used (nearly) all of the tail budget


async def test_restart_resumes_without_loss_or_duplicates(devserver: DevServer, pipe: Running) -> None:
    devserver.add_fault(Fault(path="/me/logs$", status=503))  # an outage: nothing is acknowledged
    p = await pipe.start()
    src = p.source("durable")
    for i in range(400):
        p.write(src, f"d{i}")
    await p.flush(src, timeout=0.5)
    assert outputs(devserver, src.id) == []
    assert p.status()["sources"][0]["pending_bytes"] > 0
    await pipe.stop()
    devserver.clear_faults()
    p2 = await pipe.start()
    await apoll(lambda: len(outputs(devserver, src.id)) >= 400, timeout=20)
    await p2.flush(timeout=t(10))
    assert outputs(devserver, src.id) == [f"d{i}" for i in range(400)]
    assert p2.status()["sources"][0]["pending_bytes"] == 0


async def test_rotation_keeps_shipping_in_order(devserver: DevServer, pipe: Running) -> None:
    p = await pipe.start(max_file_bytes=4096, backups=50)
    src = p.source("rot")
    for i in range(2000):
        p.write(src, f"r{i:05d}")
    await p.flush(src, timeout=t(20))
    assert outputs(devserver, src.id) == [f"r{i:05d}" for i in range(2000)]
    path = p.file_of(src)
    assert path is not None and path.with_name(path.name + ".1").exists()
