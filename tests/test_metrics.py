"""Prometheus metrics: the facade (one registry per instance) and a running daemon's /metrics,
parsed with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import math
import socket
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from coder_agent.devserver import DevServer
from coder_agent.metrics import Metrics

from .conftest import apoll


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_each_instance_has_its_own_registry_and_names_keep_the_prefix() -> None:
    a, b = Metrics(), Metrics()
    a.inc("app_status_total", help_text="app statuses by outcome", outcome="delivered")
    a.inc("app_status_total", outcome="delivered")
    a.gauge_fn("broken", lambda: 1 / 0)
    a.observe("rpc_call_seconds", 0.003, method="UpdateStats")
    fa, fb = families(a.render().decode()), families(b.render().decode())
    counter = fa["coder_agent_app_status"]
    assert counter.type == "counter"
    assert [(s.name, s.labels, s.value) for s in counter.samples if s.name.endswith("_total")] == [
        ("coder_agent_app_status_total", {"outcome": "delivered"}, 2.0)]
    assert math.isnan(fa["coder_agent_broken"].samples[0].value)  # a broken gauge does not break the scrape
    hist = fa["coder_agent_rpc_call_seconds"]
    assert hist.type == "histogram"
    assert [s.value for s in hist.samples if s.name.endswith("_count")] == [1.0]
    assert "coder_agent_app_status" not in fb and "process_cpu_seconds" in fb and "python_info" in fb


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_running_daemon_serves_process_metrics_and_latency_histograms(  # type: ignore[no-untyped-def]
    devserver: DevServer, daemon_env, spawn_daemon, short_tmp: Path
) -> None:
    cfg = short_tmp / "config.toml"
    cfg.write_text('[[scripts]]\ndisplay_name = "hello"\nscript = "echo metrics-line"\n')
    port = _free_port()
    d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token, CODER_AGENT_CONFIG=str(cfg),
                                CODER_AGENT_PROMETHEUS_ADDRESS=f"127.0.0.1:{port}"))
    await asyncio.to_thread(d.wait_ready)
    await asyncio.to_thread(d.api, "GET", "/api/v0/status")

    def scrape() -> dict[str, Any]:
        # synchronous (apoll's condition); the daemon answers /metrics without asking the devserver
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        return families(r.text)

    def observed(f: dict[str, Any], name: str) -> float:
        fam = f.get(name)
        assert fam is None or fam.type == "histogram", fam
        return sum(s.value for s in fam.samples if s.name == f"{name}_count") if fam else 0.0

    want = ("coder_agent_local_api_request_seconds", "coder_agent_rpc_call_seconds",
            "coder_agent_log_batch_ack_seconds")

    def all_observed() -> dict[str, Any] | None:
        m = scrape()
        return m if all(observed(m, n) > 0 for n in want) else None

    f = await apoll(all_observed, timeout=30, interval=0.2)
    local = f["coder_agent_local_api_request_seconds"]
    assert any(s.labels.get("route") == "/api/v0/status" and s.labels.get("method") == "GET"
               for s in local.samples)
    assert any(s.labels.get("le") == "+Inf" for s in local.samples)
    # the library's process and platform collectors, on the daemon's registry
    assert f["process_resident_memory_bytes"].samples[0].value > 0
    assert f["process_cpu_seconds"].type == "counter"
    assert f["process_open_fds"].samples[0].value > 0
    assert "python_info" in f
    # today's series keep their names
    assert f["coder_agent_uptime_seconds"].type == "gauge"
    assert "coder_agent_listening_ports_scans" in f
