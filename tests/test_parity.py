"""Go-agent parity (issue 20): the real daemon, as a subprocess, against the devserver, doing what a
template written for Coder's Go agent expects. Each test names the item of the contract it proves."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from pathlib import Path
from typing import Any

from coder_agent.devserver import DevServer

from .conftest import apoll


async def _ready(d: Any) -> None:
    await asyncio.to_thread(d.wait_ready)


def _outputs(ds: DevServer, name: str) -> list[str]:
    sources = {k for k, v in ds.agent.log_sources.items() if v.get("display_name") == name}
    return [r["output"] for r in ds.agent.logs if r["log_source_id"] in sources]


async def test_item2_five_field_cron_is_seconds_first_as_in_go(devserver: DevServer, daemon_env: Any,
                                                               spawn_daemon: Any, short_tmp: Path) -> None:
    """``*/5 * * * *`` fires every 5 seconds (Go's parser: sec min hour dom month), for manifest
    scripts and for TOML ``[[scripts]]`` alike."""
    stamps = short_tmp / "toml-cron.txt"
    cfg = short_tmp / "config.toml"
    cfg.write_text('[[scripts]]\ndisplay_name = "tick"\nrun_on_start = false\ncron = "*/5 * * * *"\n'
                   f'script = "date +%s >> {stamps}"\n')
    devserver.agent.scripts = [{"display_name": "manifest tick", "script": "echo tick-$(date +%s)",
                                "run_on_start": False, "cron": "*/5 * * * *"}]
    d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token, CODER_AGENT_CONFIG=str(cfg)))
    await _ready(d)
    # Before the fix the first run came at the next whole minute, the second five minutes later.
    await apoll(lambda: stamps.exists() and len(stamps.read_text().split()) >= 3, timeout=30)
    times = [int(x) for x in stamps.read_text().split()]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(4 <= g <= 6 for g in gaps), gaps
    assert all(t % 5 == 0 for t in times), times  # on the second that matches */5, not 5 s after start
    ticks = await apoll(lambda: (o := _outputs(devserver, "manifest tick")) and len(o) >= 2 and o, timeout=30)
    assert all(int(x.split("-")[1]) % 5 == 0 for x in ticks)
    completions = [c for c in devserver.agent.extra["rpc"].script_completions if c["stage"] == "cron"]
    assert completions and dt.datetime.now(dt.UTC) - completions[-1]["end"] < dt.timedelta(seconds=30)
