"""The watcher service against the devserver on loopback: a real client, real SSE streams, a real
state dir. Only the session restart is a recording hook here (the daemon tests cover the rest)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from coder_agent.clock import FakeClock
from coder_agent.coderapi.client import CoderClient, FixedToken
from coder_agent.devserver import DevServer
from coder_agent.devserver.reinit import ReinitHub, mark_prebuild
from coder_agent.reinit.claim import STATE_KEY
from coder_agent.reinit.watcher import ReinitWatcher
from coder_agent.retry import Backoff
from coder_agent.state import StateStore

from ..conftest import apoll, mount_tmpfs, t
from .conftest import PING


@dataclass
class Harness:
    ds: DevServer
    store: StateStore
    watcher: ReinitWatcher
    reinits: list[str] = field(default_factory=list)
    records_seen_at_reinit: list[object] = field(default_factory=list)

    def stream_requests(self) -> int:
        return len(self.ds.requests_to("/me/reinit"))


@pytest.fixture
async def make_watcher(
    prebuild_ds: DevServer, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    tasks: list[asyncio.Task[None]] = []
    clients: list[CoderClient] = []

    async def make(state_dir: Path | None = None, ping_interval: float = PING,
                   workspace_id: str | None = None, clock: Any = None,
                   refresh: Callable[[], Awaitable[Any]] | None = None) -> Harness:
        client = CoderClient(prebuild_ds.url, FixedToken(prebuild_ds.agent.token))
        clients.append(client)
        store = StateStore(state_dir or tmp_path / "state")
        h: Harness

        async def reinitialize(reason: str) -> None:
            h.records_seen_at_reinit.append(store.get(STATE_KEY))
            h.reinits.append(reason)

        w = ReinitWatcher(client, store, reinitialize, ping_interval=ping_interval,
                          workspace_id=lambda: workspace_id, clock=clock, refresh_token=refresh)
        h = Harness(prebuild_ds, store, w)
        tasks.append(asyncio.create_task(w.run()))
        return h

    yield make
    for task in tasks:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
    for c in clients:
        await c.aclose()


async def test_claim_reinits_once_and_record_is_written_first(
    make_watcher: Callable[..., Awaitable[Harness]], reinit_hub: ReinitHub
) -> None:
    h = await make_watcher()
    await apoll(lambda: reinit_hub.streams)
    owner = "5f0b8a8e-3c1d-4b8e-9f6a-2d7c1e0b9a8f"
    reinit_hub.claim(owner)
    await apoll(lambda: h.reinits)
    assert h.reinits == ["prebuild_claimed"]
    rec = h.records_seen_at_reinit[0]
    assert isinstance(rec, dict) and rec["owner_id"] == owner
    assert rec["workspace_id"] == h.ds.agent.workspace_id
    # It reconnects at once; the server pre-seeds the same claim; that is a duplicate and the
    # watcher stays on that stream instead of looping.
    await apoll(lambda: h.watcher.duplicates >= 1)
    conns = reinit_hub.connections
    await asyncio.sleep(t(4 * PING))
    assert reinit_hub.connections == conns == 2
    assert h.reinits == ["prebuild_claimed"]
    assert h.watcher.status()["last_claim"]["owner_id"] == owner


async def test_repeated_event_on_the_same_stream_is_a_duplicate(
    make_watcher: Callable[..., Awaitable[Harness]], reinit_hub: ReinitHub
) -> None:
    h = await make_watcher()
    await apoll(lambda: reinit_hub.streams)
    reinit_hub.claim("owner-a")
    await apoll(lambda: h.watcher.duplicates >= 1)
    ev = reinit_hub.claims[h.ds.agent.id]
    for _ in range(3):
        reinit_hub.claim(ev["owner_id"])
    await apoll(lambda: h.watcher.duplicates >= 4)
    assert h.reinits == ["prebuild_claimed"]


async def test_restart_with_the_same_state_dir_does_not_reinit_again(
    make_watcher: Callable[..., Awaitable[Harness]], reinit_hub: ReinitHub, tmp_path: Path
) -> None:
    first = await make_watcher(tmp_path / "st")
    await apoll(lambda: reinit_hub.streams)
    reinit_hub.claim("owner-a")
    await apoll(lambda: first.watcher.duplicates >= 1)
    # a "restarted daemon": a new watcher, same state dir; coderd pre-seeds the claim
    second = await make_watcher(tmp_path / "st")
    await apoll(lambda: second.watcher.duplicates >= 1)
    assert second.reinits == []
    # a fresh state dir (e.g. a new container) would act: the record is what prevents it
    third = await make_watcher(tmp_path / "fresh")
    await apoll(lambda: third.reinits)


async def test_a_new_owner_is_a_new_claim(
    make_watcher: Callable[..., Awaitable[Harness]], reinit_hub: ReinitHub
) -> None:
    h = await make_watcher()
    await apoll(lambda: reinit_hub.streams)
    reinit_hub.claim("owner-a")
    await apoll(lambda: h.watcher.duplicates >= 1)
    reinit_hub.claim("owner-b")
    await apoll(lambda: len(h.reinits) == 2)
    assert h.store.get(STATE_KEY)["owner_id"] == "owner-b"


async def test_legacy_workspaceID_key_is_accepted(
    make_watcher: Callable[..., Awaitable[Harness]], reinit_hub: ReinitHub
) -> None:
    reinit_hub.legacy_keys = True
    h = await make_watcher()
    await apoll(lambda: reinit_hub.streams)
    reinit_hub.claim("owner-a")
    await apoll(lambda: h.reinits)


async def test_claim_for_another_workspace_is_ignored(
    make_watcher: Callable[..., Awaitable[Harness]], reinit_hub: ReinitHub
) -> None:
    h = await make_watcher(workspace_id="11111111-2222-3333-4444-555555555555")
    await apoll(lambda: reinit_hub.streams)
    reinit_hub.claim("owner-a")
    await apoll(lambda: reinit_hub.events_sent >= 1)
    await asyncio.sleep(t(2 * PING))
    assert h.reinits == [] and h.store.get(STATE_KEY) is None


async def test_unknown_reason_is_said_once_and_ignored(
    make_watcher: Callable[..., Awaitable[Harness]], reinit_hub: ReinitHub
) -> None:
    with capture_logs() as logs:
        h = await make_watcher()
        await apoll(lambda: reinit_hub.streams)
        ws = h.ds.agent.workspace_id
        for _ in range(3):
            reinit_hub.send_raw(f'event: data\ndata: {{"workspace_id":"{ws}","reason":"upgrade"}}\n\n'.encode())
        reinit_hub.send_raw(b"event: surprise\ndata: 1\n\n")
        await apoll(lambda: reinit_hub.pings_sent >= 2)
        await asyncio.sleep(t(2 * PING))
    assert h.reinits == []
    assert reinit_hub.connections == 1  # ignoring is not reconnecting
    said = [e for e in logs if e["event"] == "unknown reinit reason ignored"]
    assert len(said) == 1 and said[0]["reason"] == "upgrade"
    assert [e["event_type"] for e in logs if e["event"] == "unknown reinit event type ignored"] == ["surprise"]


async def test_error_event_and_bad_data_reconnect(
    make_watcher: Callable[..., Awaitable[Harness]], reinit_hub: ReinitHub
) -> None:
    h = await make_watcher()
    await apoll(lambda: reinit_hub.connections == 1 and reinit_hub.streams)
    reinit_hub.send_raw(b"event: error\ndata: boom\n\n")
    await apoll(lambda: reinit_hub.connections == 2 and reinit_hub.streams)
    reinit_hub.send_raw(b"event: data\ndata: {not json\n\n")
    await apoll(lambda: reinit_hub.connections == 3)
    assert h.reinits == []


async def test_409_stops_watching_for_good(
    make_watcher: Callable[..., Awaitable[Harness]], prebuild_ds: DevServer
) -> None:
    mark_prebuild(prebuild_ds.agent, False)
    with capture_logs() as logs:
        h = await make_watcher()
        await apoll(lambda: h.watcher.health.state == "stopped")
        # several backoff periods of the normal schedule: nothing more is asked
        await asyncio.sleep(t(1.0))
    assert h.stream_requests() == 1
    st = h.watcher.status()
    assert st["state"] == "not_applicable" and "409" in st["stopped_reason"]
    assert h.watcher.health.message.startswith("not applicable")
    assert sum(e["event"] == "received terminal 409, stopping reinit watching" for e in logs) == 1


async def test_dropped_stream_reconnects(
    make_watcher: Callable[..., Awaitable[Harness]], reinit_hub: ReinitHub
) -> None:
    h = await make_watcher()
    await apoll(lambda: reinit_hub.streams)
    assert reinit_hub.drop_streams() == 1
    await apoll(lambda: reinit_hub.connections == 2 and reinit_hub.streams)
    reinit_hub.close_streams()  # a clean end of stream is a drop too
    await apoll(lambda: reinit_hub.connections == 3 and reinit_hub.streams)
    # and it still works afterwards
    reinit_hub.claim("owner-a")
    await apoll(lambda: h.reinits)


async def test_silent_stream_is_treated_as_dropped(
    make_watcher: Callable[..., Awaitable[Harness]], reinit_hub: ReinitHub
) -> None:
    h = await make_watcher()
    await apoll(lambda: reinit_hub.streams)
    reinit_hub.silent = True
    t0 = asyncio.get_running_loop().time()
    await apoll(lambda: reinit_hub.connections >= 2)
    waited = asyncio.get_running_loop().time() - t0
    assert waited >= 3 * PING * 0.9  # not before three intervals passed
    assert h.watcher.health.state in ("degraded", "ok")


async def test_bytes_that_never_complete_an_event_are_a_dropped_stream(
    make_watcher: Callable[..., Awaitable[Harness]], reinit_hub: ReinitHub
) -> None:
    """Keep-alive is an event, not a byte: a line that never ends (httpx-sse buffers it) is
    dropped after three ping intervals like silence, so it cannot grow memory for ever."""
    await make_watcher()
    await apoll(lambda: reinit_hub.streams)
    reinit_hub.silent = True
    reinit_hub.send_raw(b"data: ")
    t0 = asyncio.get_running_loop().time()
    while reinit_hub.connections < 2:
        reinit_hub.send_raw(b"x" * 1024)  # bytes keep flowing, no line ends
        await asyncio.sleep(PING / 4)
        assert asyncio.get_running_loop().time() - t0 < t(30), "the stream was never dropped"
    assert asyncio.get_running_loop().time() - t0 >= 3 * PING * 0.9


async def test_pings_keep_a_quiet_stream_alive(
    make_watcher: Callable[..., Awaitable[Harness]], reinit_hub: ReinitHub
) -> None:
    await make_watcher()
    await apoll(lambda: reinit_hub.streams)
    await apoll(lambda: reinit_hub.pings_sent >= 6)  # 6 intervals > 3 × interval silence limit
    assert reinit_hub.connections == 1


async def test_server_errors_back_off(
    make_watcher: Callable[..., Awaitable[Harness]], prebuild_ds: DevServer
) -> None:
    from coder_agent.devserver import Fault

    prebuild_ds.add_fault(Fault(path="/me/reinit", status=503, count=4))
    h = await make_watcher()
    await apoll(lambda: h.watcher.connections == 1, timeout=10)
    assert h.stream_requests() == 5


async def test_backoff_schedule_per_kind_of_failure(
    make_watcher: Callable[..., Awaitable[Harness]], prebuild_ds: DevServer
) -> None:
    from coder_agent.devserver import Fault

    refreshed: list[int] = []

    async def refresh() -> None:
        refreshed.append(1)

    clock = FakeClock()
    prebuild_ds.add_fault(Fault(path="/me/reinit", status=503, count=3))
    prebuild_ds.add_fault(Fault(path="/me/reinit", status=401, count=1))
    prebuild_ds.add_fault(Fault(path="/me/reinit", status=404, count=2))
    h = await make_watcher(clock=clock, refresh=refresh)
    await apoll(lambda: h.watcher.connections == 1)
    s = clock.sleeps
    assert len(s) == 6
    # 503: the connect schedule (0.125 s, doubling, jittered down at most 20 %)
    assert 0.1 <= s[0] <= 0.125 and s[0] < s[1] < s[2] <= 0.5
    # 401: a fresh token first, then the same schedule continues
    assert refreshed == [1] and s[2] < s[3] <= 1.0
    # 404 (an old coderd without the endpoint): slow, 30 s and up, not a hammering loop
    assert 24 <= s[4] <= 30 and 48 <= s[5] <= 60
    assert h.watcher.health.state == "ok"


def test_backoff_resets_only_after_a_sustained_stream() -> None:
    # the watcher's use of the shared schedule: successes within one short stream do not reset
    b = Backoff()
    for _ in range(5):
        b.next_delay()
    b.success(0.0)
    b.success(1.0)
    assert b.attempts == 5
    b.success(31.0)
    assert b.attempts == 0


async def test_unwritable_record_still_reinits_once_with_dedupe_in_memory(
    make_watcher: Callable[..., Awaitable[Harness]], reinit_hub: ReinitHub, short_tmp: Path
) -> None:
    """The state dir refuses writes (a read-only mount: root ignores permissions): the claim is
    honoured anyway, the failure is said once, and the pre-seeded repeat on the next stream and a
    resent event are still duplicates (dedupe in memory)."""
    with mount_tmpfs(short_tmp / "ro-state", "size=64k,ro") as state, capture_logs() as logs:
        h = await make_watcher(state)
        await apoll(lambda: reinit_hub.streams)
        reinit_hub.claim("owner-a")
        await apoll(lambda: h.reinits)
        await apoll(lambda: h.watcher.duplicates >= 1)  # reconnected; coderd pre-seeded the same claim
        reinit_hub.claim("owner-a")
        await apoll(lambda: h.watcher.duplicates >= 2)
        assert not any(state.iterdir())  # really nothing was written
    assert h.reinits == ["prebuild_claimed"]
    assert h.watcher.status()["last_claim"]["owner_id"] == "owner-a"  # from memory
    warned = [e for e in logs if e["event"] == "cannot record the handled claim; dedupe is in memory only"]
    assert len(warned) == 1, [e["event"] for e in logs]


class RefusedThenOk:
    """A token provider whose identity exchange is refused (coderd's 409 on the exchange, not on
    /me/reinit) ``failures`` times, then yields the agent's token."""

    method = "aws-instance-identity"

    def __init__(self, token: str, failures: int) -> None:
        self._token = token
        self.failures = failures
        self.calls = 0

    async def token(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            from coder_agent.errors import AuthError, NotAuthenticated
            refused = AuthError(409, "Multiple agents found with instance ID \"i-1\". Set CODER_AGENT_NAME",
                                method="POST", path="/api/v2/workspaceagents/aws-instance-identity")
            raise NotAuthenticated(refused)
        return self._token

    refresh = token


async def test_refused_exchange_is_not_the_reinit_409_and_waits_on_the_auth_policy(
    prebuild_ds: DevServer, reinit_hub: ReinitHub, tmp_path: Path
) -> None:
    """Issue 19: the exchange's 409 must not stop reinit watching; the watcher waits for
    authentication (debug, no server text) on the auth backoff, then watches and handles a claim."""
    from coder_agent.auth import IDENTITY

    tokens = RefusedThenOk(prebuild_ds.agent.token, failures=4)
    clock = FakeClock()
    reinits: list[str] = []

    async def reinitialize(reason: str) -> None:
        reinits.append(reason)

    client = CoderClient(prebuild_ds.url, tokens)
    try:
        w = ReinitWatcher(client, StateStore(tmp_path / "state"), reinitialize, ping_interval=PING, clock=clock)
        with capture_logs() as logs:
            task = asyncio.create_task(w.run())
            try:
                await apoll(lambda: w.state == "watching")
                reinit_hub.claim("owner-after-auth")
                await apoll(lambda: reinits == ["prebuild_claimed"])
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        await client.aclose()
    assert w.stopped_reason == "" and w.status()["state"] != "not_applicable"
    assert tokens.calls >= 5 and len(clock.sleeps) >= 4
    for n, delay in enumerate(clock.sleeps[:4], 1):  # the auth policy's schedule, not the stream's
        base = min(IDENTITY.cap, IDENTITY.initial * IDENTITY.factor ** (n - 1))
        assert base * (1 - IDENTITY.jitter) - 1e-9 <= delay <= base + 1e-9, clock.sleeps
    waiting = [e for e in logs if e["event"] == "waiting for authentication"]
    assert len(waiting) == 4 and all(e["log_level"] == "debug" for e in waiting)
    assert not any("Multiple agents" in str(e) for e in logs)
    assert not any(e["log_level"] in ("warning", "error") for e in logs), logs
