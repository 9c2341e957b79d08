"""SessionOwner's state table, with a recording driver: start, reinit, stop, and their races."""

from __future__ import annotations

import asyncio

from coder_agent.errors import AuthError
from coder_agent.lifecycle import State
from coder_agent.sessionowner import SessionOwner

from .conftest import apoll, t


class Driver:
    def __init__(self, stop_delay: float = 0.0, stop_error: bool = False) -> None:
        self.runs = 0
        self.stops = 0
        self.cancelled = 0
        self.stop_delay = stop_delay
        self.stop_error = stop_error

    async def run(self) -> None:
        self.runs += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def stop(self) -> None:
        self.stops += 1
        await asyncio.sleep(self.stop_delay)
        if self.stop_error:
            raise RuntimeError("broken stop")


def owner(**kw: object) -> tuple[SessionOwner, list[str]]:
    calls: list[str] = []

    async def refresh() -> str:
        calls.append("refresh")
        if kw.get("refuse"):
            raise AuthError(401, "refused")
        return "token"

    o = SessionOwner(shutdown_timeout=float(kw.get("timeout", 5.0)),  # type: ignore[arg-type]
                     refresh_token=refresh, retry_now=lambda: calls.append("retry_now"), scrub=lambda s: s)
    return o, calls


async def test_start_reinit_stop() -> None:
    o, calls = owner()
    d = Driver()
    o.drive(d)
    o.on_new_session(lambda: calls.append("new_session"))
    assert o.phase == "starting" and o.generation == 0
    o.start()
    await apoll(lambda: d.runs == 1)
    assert o.phase == "running" and o.generation == 1
    first = o.lifecycle
    first.advance(State.STARTING)
    await o.reinitialize("claimed")
    await apoll(lambda: d.runs == 2)
    assert (d.stops, d.cancelled, o.generation, o.phase) == (1, 1, 2, "running")
    assert o.lifecycle is not first and o.lifecycle.state is State.CREATED
    assert calls == ["new_session", "refresh", "retry_now"]  # in that order, before the new run
    o.stopping()
    await o.reinitialize("again")  # no reinit once a stop began
    await o.shutdown(1.0)
    assert (d.runs, d.stops, d.cancelled, o.phase) == (2, 2, 2, "stopping")
    await o.shutdown(1.0)
    assert d.stops == 2  # the driver's stop runs once per started session


async def test_stop_during_reinit_waits_for_it_and_starts_nothing_new() -> None:
    o, _ = owner()
    d = Driver(stop_delay=t(0.3))
    o.drive(d)
    o.start()
    reinit = asyncio.create_task(o.reinitialize("claimed"))
    await apoll(lambda: d.stops == 1)
    o.stopping()
    await o.shutdown(1.0)
    await reinit
    assert (d.runs, d.stops, o.generation, o.phase) == (1, 1, 1, "stopping")


async def test_a_failing_or_slow_stop_still_ends_the_run() -> None:
    for d, timeout in ((Driver(stop_error=True), 5.0), (Driver(stop_delay=10.0), 0.2)):
        o, _ = owner(timeout=timeout)
        o.drive(d)
        o.start()
        await apoll(lambda d=d: d.runs == 1)  # type: ignore[misc]
        await o.reinitialize("claimed")  # the stop fails or times out: logged, the run cancelled all the same
        await apoll(lambda d=d: d.runs == 2)  # type: ignore[misc]
        assert d.cancelled == 1 and o.phase == "running"
        o.stopping()
        await o.shutdown(0.2)


async def test_refused_reauthentication_still_starts_the_new_session() -> None:
    o, calls = owner(refuse=True)
    d = Driver()
    o.drive(d)
    o.start()
    await o.reinitialize("claimed")
    await apoll(lambda: d.runs == 2)
    assert calls == ["refresh", "retry_now"] and o.generation == 2
    o.stopping()
    await o.shutdown(1.0)


def test_last_driver_wins_and_lifecycle_is_fresh_per_session() -> None:
    o, _ = owner()
    lc = o.fresh_lifecycle()
    assert o.fresh_lifecycle() is lc  # untouched: kept
    lc.advance(State.STARTING)
    assert o.fresh_lifecycle() is not lc and o.lifecycle.state is State.CREATED
