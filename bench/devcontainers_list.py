"""Container listing and watch latency, against the Go agent's method measured in the same run.

With N containers (default 50, labelled ``coder-agent.bench=<run id>``, removed afterwards):

* list: the Go agent's ``docker ps --all --quiet --no-trunc`` + one ``docker inspect <ids...>``
  (two docker CLI processes, JSON parsed)  vs  ours: the SDK list + per-container inspect with
  the (id, state) cache cold and warm, converted to codersdk JSON; and a full
  ``GET /api/v0/containers`` on the local API socket.
* watch: ``docker stop`` of one container → the websocket push that shows it stopped. The Go
  agent re-lists every 10 s, so its expected latency is half the interval plus one listing
  (modelled from the listing time measured above, not run).

Needs a Docker engine and local/busybox:latest (scripts/provision.sh). Run:
``python -m bench.devcontainers_list [--containers N] [--runs R] [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from ._util import median_time, row

IMAGE = "local/busybox:latest"
SLEEPER = ["/bin/sh", "-c", "trap 'exit 0' TERM; while sleep 1 & wait $!; do :; done"]
GO_POLL_INTERVAL = 10.0


def go_agent_list() -> list[dict[str, Any]]:
    ids = subprocess.run(["docker", "ps", "--all", "--quiet", "--no-trunc"], capture_output=True, text=True,
                         check=True, timeout=15).stdout.split()
    if not ids:
        return []
    out = subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True, check=True, timeout=15).stdout
    return list(json.loads(out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--containers", type=int, default=50)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="20 containers, fewer runs")
    a = ap.parse_args()
    if a.quick:
        a.containers, a.runs = 20, 7

    import docker

    from coder_agent.devcontainers.engine import Engine
    from coder_agent.devcontainers.model import container_from_inspect

    client = docker.from_env(timeout=60)
    client.ping()
    run_id = uuid.uuid4().hex[:8]
    label = {"coder-agent.bench": run_id}
    made: list[Any] = []
    try:
        t0 = time.perf_counter()
        for i in range(a.containers):
            c = client.containers.create(IMAGE, SLEEPER, name=f"cabench-{run_id}-{i}", labels=label)
            c.start()
            made.append(c)
        setup = time.perf_counter() - t0
        total = len(client.api.containers(all=True))

        go = median_time(go_agent_list, a.runs)
        eng = Engine()
        eng.connect()

        def cold() -> None:
            eng._cache.clear()
            [container_from_inspect(d) for d in eng.list_inspect()]

        def warm() -> None:
            [container_from_inspect(d) for d in eng.list_inspect()]

        ours_cold = median_time(cold, a.runs)
        warm()
        ours_warm = median_time(warm, a.runs)
        api_time, watch = asyncio.run(_api_and_watch(client, label, a.runs, made[0]))
        eng.close()

        print(f"{a.containers} bench containers ({total} on the engine in all; created in {setup:.1f} s), "
              f"median of {a.runs} runs.\n")
        print("| measure | coder-agent | Go agent's method | ratio |")
        print("| --- | --- | --- | --- |")
        print(row("list + inspect, cache cold", ours_cold * 1e3, go * 1e3, "ms"))
        print(row("list + inspect, steady state", ours_warm * 1e3, go * 1e3, "ms"))
        print(row("GET /api/v0/containers (local API, JSON)", api_time * 1e3, go * 1e3, "ms"))
        modelled = GO_POLL_INTERVAL / 2 + go
        print(row("watch: docker stop -> pushed update (median)", watch["push"] * 1e3, modelled * 1e3, "ms"))
        print(f"\nwatch detail: the stop call itself took {watch['stop'] * 1e3:.0f} ms (median); the push came "
              f"{watch['after'] * 1e3:.0f} ms after it returned (median, max {watch['after_max'] * 1e3:.0f} ms). "
              f"Go baseline modelled: {GO_POLL_INTERVAL:.0f} s poll / 2 + one listing.")
    finally:
        for c in made:
            with contextlib.suppress(Exception):
                c.remove(force=True)
        client.close()


async def _api_and_watch(client: Any, label: dict[str, str], runs: int, first: Any) -> tuple[float, dict[str, float]]:
    import aiohttp
    import httpx

    from coder_agent.config import load_settings
    from coder_agent.devcontainers import api as dc_api
    from coder_agent.devcontainers.manager import DevcontainerManager
    from coder_agent.localapi import LocalAPI
    from coder_agent.logsink import MemoryLogSink
    from coder_agent.state import StateStore

    tmp = Path(tempfile.mkdtemp(prefix="cab-", dir="/tmp"))
    settings = load_settings(env={
        "CODER_AGENT_URL": "http://127.0.0.1:1", "CODER_AGENT_TOKEN": "t", "CODER_AGENT_STATE_DIR": str(tmp / "s"),
        "CODER_AGENT_LOG_DIR": str(tmp / "l"), "CODER_AGENT_DIRECTORY": str(tmp),
        "CODER_AGENT_DEVCONTAINERS_PROJECT_DISCOVERY_ENABLE": "false"})
    mgr = DevcontainerManager(settings, StateStore(settings.state_dir), MemoryLogSink())
    api = LocalAPI(f"unix:{tmp / 'api.sock'}")
    for method, path, handler in dc_api.routes(mgr, lambda: None):
        api.route(method, path, handler)
    await api.start()
    task = asyncio.create_task(mgr.run())
    await mgr.wait_first_scan(30)
    key, value = next(iter(label.items()))
    try:
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(tmp / "api.sock")),
                                     base_url="http://a") as http:
            samples = []
            for _ in range(runs):
                t0 = time.perf_counter()
                r = await http.get("/api/v0/containers")
                r.json()
                samples.append(time.perf_counter() - t0)
            api_time = statistics.median(samples)

        def state(doc: dict[str, Any]) -> bool | None:
            return next((c["running"] for c in doc["containers"] if c["id"] == first.id), None)

        push, stop, after = [], [], []
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(tmp / "api.sock"))) as s, \
                s.ws_connect("http://a/api/v0/containers/watch") as ws:

            async def until(want: bool) -> float:
                while True:
                    msg = await ws.receive(timeout=30)
                    if state(json.loads(msg.data)) is want:
                        return time.perf_counter()

            await until(True)
            for _ in range(max(3, runs // 3)):
                t0 = time.perf_counter()
                stopper = asyncio.create_task(asyncio.to_thread(first.stop, timeout=5))
                t_push = await until(False)
                await stopper
                t_ret = time.perf_counter()
                push.append(t_push - t0)
                stop.append(t_ret - t0)
                after.append(max(0.0, t_push - t_ret))
                await asyncio.to_thread(first.start)
                await until(True)
        return api_time, {"push": statistics.median(push), "stop": statistics.median(stop),
                          "after": statistics.median(after), "after_max": max(after)}
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await api.stop()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
        del key, value


if __name__ == "__main__":
    main()
