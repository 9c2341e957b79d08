"""Go-agent parity (issue 20, item 10): ``--devcontainers-discovery-autostart-enable``.

A discovered project whose devcontainer.json sets ``customizations.coder.autoStart`` is brought
up (``devcontainer up``) once, on a real engine with the real Dev Containers CLI, when the flag is
on; a project without it, or any project with the flag off (Go's default), is only listed.
The config reader (:mod:`coder_agent.devcontainers.devconfig`) is tested on its own first.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from coder_agent.config import load_settings
from coder_agent.devcontainers import devconfig
from coder_agent.devserver import DevServer

from ..conftest import apoll
from .conftest import IMAGE, git_repo

AUTO = f"""// a comment, as devcontainer.json files have
{{
  "image": "{IMAGE}", /* offline image */
  "customizations": {{"coder": {{"autoStart": true,}}, "vscode": {{"extensions": ["a//b"]}}}},
}}
"""
PLAIN = json.dumps({"image": IMAGE})


# the config reader ------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "want"), [
    (AUTO, True),
    (PLAIN, False),
    ('{"customizations": {"coder": {"autoStart": false}}}', False),
    ('{"customizations": {"coder": {"autoStart": "true"}}}', False),  # Go decodes a bool: strings never start
    ('{"customizations": {"coder": {"ignore": true}}}', False),
    ('{"customizations": "x"}', False),
    ('\ufeff{"url": "http://x/*y*/", "customizations": {"coder": {"autoStart": true}}}', True),
])
def test_autostart_field_is_read_from_jsonc(text: str, want: bool) -> None:
    assert devconfig.autostart(text) is want


@pytest.mark.parametrize("text", ['{"image": ', "[true]", '{"a": 1 /* open', ""])
def test_unreadable_config_is_an_error(text: str) -> None:
    with pytest.raises(ValueError):
        devconfig.autostart(text)


def test_strings_keep_comment_markers_and_commas() -> None:
    assert devconfig.loads('{"a": "//,]", "b": [1, 2,], "c": "\\"/*"}') == {"a": "//,]", "b": [1, 2], "c": '"/*'}


# the setting ------------------------------------------------------------------------------

BASE = {"CODER_AGENT_URL": "http://127.0.0.1:1", "CODER_AGENT_TOKEN": "t"}
NAME = "CODER_AGENT_DEVCONTAINERS_DISCOVERY_AUTOSTART_ENABLE"


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("CODER_AGENT_")}
    return subprocess.run([sys.executable, "-m", "coder_agent", *args], env={**full, **env}, capture_output=True,
                          text=True, timeout=60)


def test_setting_defaults_off_as_go_and_reads_flag_env_and_file(tmp_path: Path) -> None:
    assert load_settings({}, env=BASE).devcontainers_discovery_autostart is False
    assert load_settings({}, env={**BASE, NAME: "true"}).devcontainers_discovery_autostart is True
    cfg = tmp_path / "c.toml"
    cfg.write_text("[devcontainers]\ndiscovery_autostart = true\n")
    assert load_settings({}, env=BASE, config_file=cfg).devcontainers_discovery_autostart is True
    out = _cli(["config", "check", "--json", "--devcontainers-discovery-autostart-enable"], BASE)
    assert json.loads(out.stdout)["devcontainers_discovery_autostart"] is True, out.stderr


def test_bad_value_is_an_exit_78_one_liner() -> None:
    r = _cli(["run"], {**BASE, NAME: "maybe"})
    assert r.returncode == 78, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and NAME in lines[0], r.stderr


# the real daemon, engine and CLI ---------------------------------------------------------------

def _events(d: Any, event: str) -> list[dict[str, Any]]:
    out = []
    for ln in d.stderr().splitlines():
        if ln.startswith("{"):
            e = json.loads(ln)
            if e.get("event") == event:
                out.append(e)
    return out


def _discovered(d: Any, folder: Path) -> dict[str, Any] | None:
    return next((e for e in _events(d, "devcontainer project discovered")
                 if e.get("workspace_folder") == str(folder)), None)


def _listing(d: Any) -> dict[str, Any]:
    r = d.api("GET", "/api/v0/containers")
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def _dc(doc: dict[str, Any], folder: Path) -> dict[str, Any] | None:
    return next((x for x in doc["devcontainers"] if x["workspace_folder"] == str(folder)), None)


def _containers_of(docker_client: Any, folder: Path, running: bool = False) -> list[Any]:
    return [c for c in docker_client.containers.list(all=not running, sparse=True)
            if (c.attrs.get("Labels") or {}).get("devcontainer.local_folder") == str(folder)]


async def test_discovered_project_with_autostart_comes_up_once(
        devserver: DevServer, daemon_env: Any, short_tmp: Path, docker_client: Any, cli_path: str, tag: str,
        spawn_daemon: Any) -> None:  # spawn_daemon after tag: the daemon stops before the containers are removed
    ws = short_tmp / "ws"
    auto = git_repo(ws / "auto", {".devcontainer/devcontainer.json": AUTO})
    plain = git_repo(ws / "plain", {".devcontainer.json": PLAIN})
    broken = git_repo(ws / "broken", {".devcontainer/devcontainer.json": '{"image": "x", '})  # caught mid-write
    d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token, CODER_AGENT_DEVCONTAINERS_ENABLE="true",
                                CODER_AGENT_DEVCONTAINERS_CLI=cli_path, CODER_AGENT_DIRECTORY=str(ws),
                                **{NAME: "true"}))
    await asyncio.to_thread(d.wait_ready)
    seen: list[str] = []

    def running() -> dict[str, Any] | None:
        x = _dc(_listing(d), auto)
        if x is not None and (not seen or seen[-1] != x["status"]):
            seen.append(x["status"])
        return x if x is not None and x["status"] in ("running", "error") else None

    up = await apoll(running, timeout=240, interval=0.05)
    said = [ln for ln in d.stderr().splitlines() if "devcontainer" in ln]
    assert up["status"] == "running", (up, said)
    assert "starting" in seen, seen  # shown as starting while `devcontainer up` runs, then running
    assert up["container"]["running"] is True
    first_id = up["container"]["id"]
    assert [c.id for c in _containers_of(docker_client, auto, running=True)] == [first_id]
    assert _discovered(d, auto)["autostart"] is True

    # the project without autoStart is discovered (and said so) but never started
    await apoll(lambda: _discovered(d, plain), timeout=30)
    assert _discovered(d, plain)["autostart"] is False
    listed = _dc(_listing(d), plain)
    assert listed is not None and listed["status"] == "stopped" and "container" not in listed
    assert not _containers_of(docker_client, plain)

    # its own log source, on coderd: the plain `devcontainer up` (no --remove-existing-container)
    def shipped() -> list[dict[str, Any]]:
        return [r for r in devserver.agent.logs if "devcontainer auto is running" in r["output"]]

    await apoll(shipped, timeout=60)
    source = shipped()[0]["log_source_id"]
    assert devserver.agent.log_sources[source]["display_name"] == "devcontainer auto"
    starts = [r["output"] for r in devserver.agent.logs if r["output"].startswith("Starting devcontainer auto")]
    assert len(starts) == 1 and "--remove-existing-container" not in starts[0], starts

    # a config that cannot be parsed is said once and read again when the file changes
    cfg = broken / ".devcontainer/devcontainer.json"
    await apoll(lambda: [e for e in _events(d, "cannot read devcontainer config for autostart")
                         if e.get("config") == str(cfg)], timeout=60)
    assert _discovered(d, broken) is None
    cfg.write_text(PLAIN)
    assert (await apoll(lambda: _discovered(d, broken), timeout=60))["autostart"] is False

    # a re-scan (a new project appears: discovery runs again) does not start it a second time
    later = git_repo(ws / "later", {".devcontainer/devcontainer.json": PLAIN})
    await apoll(lambda: _discovered(d, later), timeout=60)
    again = _dc(_listing(d), auto)
    assert again is not None and again["status"] == "running" and again["container"]["id"] == first_id
    assert len([e for e in _events(d, "devcontainer project discovered")
                if e.get("workspace_folder") == str(auto)]) == 1
    starts_after = [r["output"] for r in devserver.agent.logs if r["output"].startswith("Starting devcontainer auto")]
    assert len(starts_after) == 1, starts_after


async def test_flag_off_discovers_but_never_starts(
        devserver: DevServer, daemon_env: Any, short_tmp: Path, docker_client: Any, cli_path: str, tag: str,
        spawn_daemon: Any) -> None:  # spawn_daemon after tag: the daemon stops before the containers are removed
    ws = short_tmp / "ws"
    auto = git_repo(ws / "auto", {".devcontainer/devcontainer.json": AUTO})
    d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token, CODER_AGENT_DEVCONTAINERS_ENABLE="true",
                                CODER_AGENT_DEVCONTAINERS_CLI=cli_path, CODER_AGENT_DIRECTORY=str(ws)))
    await asyncio.to_thread(d.wait_ready)
    # said once the discovery pass has handled the project: autostart was (or would have been) decided
    found = await apoll(lambda: _discovered(d, auto), timeout=60)
    assert found["autostart"] == "off"
    listed = _dc(_listing(d), auto)
    assert listed is not None and listed["status"] == "stopped" and "container" not in listed
    assert not _containers_of(docker_client, auto)
    assert not [r for r in devserver.agent.logs if r["output"].startswith("Starting devcontainer")]
