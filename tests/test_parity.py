"""Go-agent parity (issue 20): the real daemon, as a subprocess, against the devserver, doing what a
template written for Coder's Go agent expects. Each test names the item of the contract it proves."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import itertools
import json
import os
import pwd
import signal
import subprocess
import sys
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


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _line(ds: DevServer, name: str, prefix: str) -> str | None:
    return next((o[len(prefix):] for o in _outputs(ds, name) if o.startswith(prefix)), None)


async def test_item1_login_shell_shebang_scripts_and_bin_dir_first(devserver: DevServer, daemon_env: Any,
                                                                   spawn_daemon: Any, short_tmp: Path) -> None:
    """Scripts and metadata commands run under the passwd login shell (not the daemon's $SHELL);
    a ``#!`` script is written to its CODER_SCRIPT_DATA_DIR and run by its own interpreter (leading
    blanks, as a Terraform heredoc leaves them, accepted); CODER_SCRIPT_BIN_DIR leads PATH."""
    passwd_shell = pwd.getpwuid(os.getuid()).pw_shell
    daemons_shell = "/bin/bash" if os.path.realpath(passwd_shell) == os.path.realpath("/bin/sh") else "/bin/sh"
    devserver.agent.scripts = [
        {"display_name": "shell",
         "script": 'echo "shell=$0"; echo "path0=${PATH%%:*}"; echo "bin=$CODER_SCRIPT_BIN_DIR"'},
        {"display_name": "python",
         "script": "\n  #!/usr/bin/env python3\nimport os, sys\nprint('py', sys.version_info[0])\n"
                   "print('dir', os.path.dirname(sys.argv[0]) == os.environ['CODER_SCRIPT_DATA_DIR'])\n"},
    ]
    devserver.agent.metadata = [
        {"key": "py", "script": "#!/usr/bin/env python3\nprint(6 * 7)", "interval": 1},
        {"key": "path", "script": 'echo "${PATH%%:*}"', "interval": 1},
        {"key": "shell", "script": 'echo "$0"', "interval": 1},
    ]
    d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token, SHELL=daemons_shell))
    await _ready(d)
    await apoll(lambda: _line(devserver, "python", "dir "), timeout=30)
    assert _line(devserver, "python", "py ") == "3"
    assert _line(devserver, "python", "dir ") == "True"
    assert _line(devserver, "shell", "shell=") == passwd_shell
    bin_dir = _line(devserver, "shell", "bin=")
    assert bin_dir and bin_dir.endswith("coder-script-data/bin") and _line(devserver, "shell", "path0=") == bin_dir
    meta = devserver.agent.extra["rpc"].metadata
    await apoll(lambda: {"py", "path", "shell"} <= set(meta), timeout=30)
    assert meta["py"]["value"].strip() == "42" and not meta["py"]["error"]
    assert meta["path"]["value"].strip() == bin_dir
    assert meta["shell"]["value"].strip() == passwd_shell
    await apoll(lambda: "ready" in [e["state"] for e in devserver.agent.lifecycle], timeout=30)


def _env_script(name: str) -> dict[str, Any]:
    return {"display_name": name, "script": 'echo "tok=$(printf %s "$CODER_AGENT_TOKEN" | sha256sum | cut -c1-64)"; '
                                            'echo "url=$CODER_AGENT_URL"; echo "user=$USER"; '
                                            'echo "ws=$CODER_WORKSPACE_NAME"; echo "data=$CODER_SCRIPT_DATA_DIR"; '
                                            'echo "foo=$FOO"'}


async def _coder_agent_env(env: dict[str, str]) -> dict[str, str]:
    proc = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "coder_agent", "env", "--json"], env=env,
                                   capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out: dict[str, str] = json.loads(proc.stdout)
    return out


async def test_item3_environment_as_go_with_the_current_token(devserver: DevServer, daemon_env: Any,
                                                              spawn_daemon: Any, short_tmp: Path) -> None:
    """The token from a token file reaches scripts as CODER_AGENT_TOKEN with CODER_AGENT_URL and
    USER; the agent's predefined variables beat the daemon's own environment, manifest variables
    beat both (``$VAR``-expanded); CODER_AGENT_SCRIPT_DATA_DIR is honoured."""
    (short_tmp / "tok").write_text(devserver.agent.token + "\n")
    devserver.agent.scripts = [_env_script("env")]
    devserver.agent.environment = {"FOO": "$HOME/foo"}
    env = daemon_env(devserver.url, "", CODER_AGENT_TOKEN_FILE=str(short_tmp / "tok"), CODER_WORKSPACE_NAME="stale",
                     FOO="from-daemon", CODER_AGENT_SCRIPT_DATA_DIR=str(short_tmp / "sdd"), HOME=str(short_tmp))
    del env["CODER_AGENT_TOKEN"]
    d = spawn_daemon(env)
    await _ready(d)
    await apoll(lambda: _line(devserver, "env", "foo="), timeout=30)
    assert _line(devserver, "env", "tok=") == _sha(devserver.agent.token)
    assert _line(devserver, "env", "url=") == devserver.url
    assert _line(devserver, "env", "user=") == pwd.getpwuid(os.getuid()).pw_name
    assert _line(devserver, "env", "ws=") == "dev"  # the manifest's workspace, not the daemon's variable
    assert _line(devserver, "env", "foo=") == f"{short_tmp}/foo"
    data = _line(devserver, "env", "data=")
    assert data and data.startswith(str(short_tmp / "sdd" / "coder-script-data") + "/")
    shown = await _coder_agent_env(env)
    assert shown["CODER_AGENT_TOKEN"] == devserver.agent.token and shown["CODER_AGENT_URL"] == devserver.url


async def test_item3_exchanged_identity_token_and_no_token_in_env(daemon_env: Any, spawn_daemon: Any,
                                                                  short_tmp: Path) -> None:
    """With AWS instance identity, scripts and ``coder-agent env`` get the session token coderd
    exchanged; ``--no-token-in-env`` (here its variable) withholds it, also the daemon's own."""
    from coder_agent.devserver import DevAgent
    from coder_agent.devserver.metadata import MetadataServer

    async with MetadataServer() as ms:
        ident = DevAgent(name="ident", instance_id=ms.aws_instance_id, scripts=[_env_script("env")])
        async with DevServer(agents=[ident]) as ds:
            env = daemon_env(ds.url, "", CODER_AGENT_AUTH="aws-instance-identity", CODER_AGENT_NAME="ident",
                             AWS_EC2_METADATA_SERVICE_ENDPOINT=ms.url + "/")
            del env["CODER_AGENT_TOKEN"]
            d = spawn_daemon(env)
            await _ready(d)
            await apoll(lambda: _line(ds, "env", "tok="), timeout=30)
            assert _line(ds, "env", "tok=") == _sha(ident.token)
            assert (await _coder_agent_env(env))["CODER_AGENT_TOKEN"] == ident.token
            d.signal(signal.SIGTERM)
            assert await asyncio.to_thread(d.wait) == 0

        plain = DevAgent(scripts=[_env_script("env")])
        async with DevServer(agents=[plain]) as ds:
            (short_tmp / "api.sock").unlink(missing_ok=True)
            env = daemon_env(ds.url, plain.token, CODER_AGENT_NO_TOKEN_IN_ENV="true")
            d = spawn_daemon(env)
            await _ready(d)
            await apoll(lambda: _line(ds, "env", "tok="), timeout=30)
            assert _line(ds, "env", "tok=") == _sha("")
            assert "CODER_AGENT_TOKEN" not in await _coder_agent_env(env)


async def test_item8_log_state_belongs_to_one_agent(daemon_env: Any, spawn_daemon: Any, short_tmp: Path) -> None:
    """A first build's agent hit Coder's log limit; a second build (a new agent id) on the same
    persistent state dir ships its logs, and none of the first agent's leftovers."""
    from coder_agent.devserver import DevAgent

    first = DevAgent(name="first", logs_overflowed=True,
                     scripts=[{"display_name": "build", "script": "echo first-agent-line"}])
    second = DevAgent(name="second", scripts=[{"display_name": "build", "script": "echo second-agent-line"}])
    async with DevServer(agents=[first, second]) as ds:
        d = spawn_daemon(daemon_env(ds.url, first.token))
        await _ready(d)
        await apoll(lambda: d.api("GET", "/api/v0/status").json()["logs"]["shipping_stopped"] == "limit_exceeded",
                    timeout=30)
        d.signal(signal.SIGTERM)
        assert await asyncio.to_thread(d.wait) == 0
        (short_tmp / "api.sock").unlink(missing_ok=True)

        d2 = spawn_daemon(daemon_env(ds.url, second.token))
        await _ready(d2)
        await apoll(lambda: "second-agent-line" in [r["output"] for r in second.logs], timeout=30)
        assert "first-agent-line" not in [r["output"] for r in second.logs]
        st = d2.api("GET", "/api/v0/status").json()["logs"]
        assert st["shipping_stopped"] is None and st["server_accepted_bytes"] > 0
        assert not first.logs


async def test_item11_go_flags_are_accepted_with_their_meaning(devserver: DevServer, daemon_env: Any,
                                                               spawn_daemon: Any, short_tmp: Path) -> None:
    """The flags Go templates pass to ``coder agent``: the header command's headers reach coderd,
    the three extra log files are written in their formats, CODER_AGENT_SUBSYSTEM is reported,
    --no-reap and --block-file-transfer are taken and kept."""
    logs = short_tmp / "extra"
    env = daemon_env(devserver.url, devserver.agent.token, CODER_AGENT_SUBSYSTEM="envbox, exectrace",
                     CODER_AGENT_HEADER_COMMAND="printf 'X-From-Command=abc\\nX-Two=2\\n'")
    d = spawn_daemon(env, "--log-human", str(logs / "human.log"), "--log-json", str(logs / "agent.json"),
                     "--log-stackdriver", str(logs / "sd.json"), "--no-reap", "--block-file-transfer")
    await _ready(d)
    rec = devserver.agent.extra
    await apoll(lambda: rec.get("rpc") and rec["rpc"].startups, timeout=30)
    assert rec["rpc"].startups[0]["subsystems"] == ["ENVBOX", "EXECTRACE"]
    up = devserver.requests_to("/api/v2/workspaceagents/me/rpc")[0]
    assert up.headers.get("X-From-Command") == "abc" and up.headers.get("X-Two") == "2"
    await apoll(lambda: (logs / "sd.json").exists() and "coder-agent started" in (logs / "sd.json").read_text())
    sd = [json.loads(ln) for ln in (logs / "sd.json").read_text().splitlines()]
    started = next(e for e in sd if e["message"] == "coder-agent started")
    assert started["severity"] == "INFO"
    js = [json.loads(ln) for ln in (logs / "agent.json").read_text().splitlines()]
    assert any(e["event"] == "coder-agent started" for e in js)
    human = (logs / "human.log").read_text()
    assert "coder-agent started" in human and not human.lstrip().startswith("{")
    assert "abc" not in human + (logs / "agent.json").read_text()  # a header value is a secret
    check = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "coder_agent", "config", "check", "--json",
                                                     "--no-reap", "--block-file-transfer"],
                                    env=env, capture_output=True, text=True, timeout=60)
    view = json.loads(check.stdout)
    assert view["no_reap"] is True and view["block_file_transfer"] is True and view["subsystem"] == "envbox,exectrace"


async def test_item11_invalid_subsystem_and_failing_header_command_are_config_errors(
        daemon_env: Any, short_tmp: Path) -> None:
    for extra, name in (({"CODER_AGENT_SUBSYSTEM": "envbox,bogus"}, "CODER_AGENT_SUBSYSTEM"),
                        ({"CODER_AGENT_HEADER_COMMAND": "exit 3"}, "CODER_AGENT_HEADER_COMMAND"),
                        ({"CODER_AGENT_HEADER_COMMAND": "echo not-a-header"}, "CODER_AGENT_HEADER_COMMAND")):
        env = daemon_env("http://127.0.0.1:9", "tok", **extra)
        proc = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "coder_agent", "run"], env=env,
                                       capture_output=True, text=True, timeout=60)
        assert proc.returncode == 78, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and name in lines[0], proc.stderr


def _semver_key(v: str) -> tuple[Any, ...]:
    """golang.org/x/mod/semver ordering: build metadata ignored, a prerelease sorts before its release."""
    core, _, _build = v.lstrip("v").partition("+")
    nums, _, pre = core.partition("-")
    parts = tuple(int(x) for x in nums.split("."))
    pre_key = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")) if pre else ()
    return (*parts, 0 if pre else 1, pre_key)


async def test_item12_version_and_metrics_as_the_dashboard_reads_them(devserver: DevServer, daemon_env: Any,
                                                                      spawn_daemon: Any) -> None:
    """The reported version compares equal to coderd's (so the dashboard never says "outdated")
    and still names coder-agent and its version; Stats.metrics carry Go's script metrics."""
    from coder_agent import __version__
    from coder_agent.devserver.rpc import control

    control(devserver).report_interval = 0.5
    devserver.agent.scripts = [{"display_name": "ok", "script": "true"}, {"display_name": "bad", "script": "exit 1"}]
    d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token))
    await _ready(d)
    rec = devserver.agent.extra
    await apoll(lambda: rec.get("rpc") and rec["rpc"].startups, timeout=30)
    version = rec["rpc"].startups[0]["version"]
    server_version = "v2.99.0-devserver"  # the devserver's /api/v2/buildinfo
    assert _semver_key(version) >= _semver_key(server_version)
    assert version.endswith(f"+coder-agent.{__version__}")

    def metrics() -> dict[tuple[str, str], dict[str, Any]] | None:
        for st in reversed(rec["rpc"].stats):
            got = {(m["name"], m["labels"].get("success", "")): m for m in st["metric_details"]}
            if ("coderd_agentstats_startup_script_seconds", "false") in got:
                return got
        return None

    got = await apoll(metrics, timeout=30)
    assert got[("agent_scripts_executed_total", "true")]["value"] == 1.0
    assert got[("agent_scripts_executed_total", "false")]["value"] == 1.0
    assert got[("agent_scripts_executed_total", "true")]["type"] == "COUNTER"
    assert got[("coderd_agentstats_startup_script_seconds", "false")]["type"] == "GAUGE"
    assert rec["rpc"].stats[-1]["session_counts"] == {} and rec["rpc"].stats[-1]["connection_count"] == 0


async def test_item4_manifest_secrets_reach_scripts_never_the_api(devserver: DevServer, daemon_env: Any,
                                                                  spawn_daemon: Any, short_tmp: Path) -> None:
    """Env secrets are exported and file secrets written (``~`` expanded, 0600, parents created)
    before start scripts run; neither value shows in the local API or the daemon's logs."""
    env_value, file_value = "s3cr3t-env-7f1e", "s3cr3t-file-92ab"
    devserver.agent.extra["secrets"] = [{"env_name": "API_KEY", "value": env_value},
                                        {"file_path": "~/.config/tool/token", "value": file_value}]
    devserver.agent.scripts = [{"display_name": "uses", "script":  # the script holds no value: hashes only
                                'f=~/.config/tool/token; echo "env=$(printf %s "$API_KEY" | sha256sum | cut -c1-64)"; '
                                'echo "mode=$(stat -c %a "$f") dir=$(stat -c %a "$(dirname "$f")")"; '
                                'echo "file=$(sha256sum < "$f" | cut -c1-64)"'}]
    d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token, HOME=str(short_tmp)))
    await _ready(d)
    await apoll(lambda: _line(devserver, "uses", "file="), timeout=30)
    assert _line(devserver, "uses", "env=") == _sha(env_value) and _line(devserver, "uses", "file=") == _sha(file_value)
    assert _line(devserver, "uses", "mode=") == "600 dir=700"
    answers = "".join([(await asyncio.to_thread(d.api, "GET", p)).text for p in ("/api/v0/manifest", "/api/v0/status")])
    assert "API_KEY" in answers and "token" in answers  # the names are shown, so the check below means something
    d.signal(signal.SIGTERM)
    assert await asyncio.to_thread(d.wait) == 0
    logs = d.stderr() + "".join(p.read_text() for p in (short_tmp / "logs").glob("coder-agent*.log"))
    for secret in (env_value, file_value):
        assert secret not in answers and secret not in logs


async def test_items6_and_7_go_log_names_and_an_empty_directory(devserver: DevServer, daemon_env: Any,
                                                                spawn_daemon: Any, short_tmp: Path) -> None:
    """A script's output is in ``coder-script-<log_source_id>.log`` in the log dir (item 6); an
    empty manifest directory is reported empty, as Go does, and commands run in $HOME (item 7)."""
    home = short_tmp / "home"
    home.mkdir()
    devserver.agent.directory = ""
    devserver.agent.scripts = [{"display_name": "where", "script": 'echo "pwd=$(pwd)"'}]
    devserver.agent.metadata = [{"key": "pwd", "script": "pwd", "interval": 1}]
    d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token, HOME=str(home)))
    await _ready(d)
    rec = devserver.agent.extra
    await apoll(lambda: _line(devserver, "where", "pwd="), timeout=30)
    assert _line(devserver, "where", "pwd=") == str(home)
    assert rec["rpc"].startups[0]["expanded_directory"] == ""
    await apoll(lambda: "pwd" in rec["rpc"].metadata, timeout=30)
    assert rec["rpc"].metadata["pwd"]["value"].strip() == str(home)
    source = devserver.agent.scripts[0]["log_source_id"]
    go_name = short_tmp / "logs" / f"coder-script-{source}.log"
    await apoll(go_name.exists)
    assert f"pwd={home}" in go_name.read_text()


async def test_item13_resource_usage_reaches_coderd_as_psutil_sees_it(devserver: DevServer, daemon_env: Any,
                                                                      spawn_daemon: Any, short_tmp: Path) -> None:
    """GetResourcesMonitoringConfiguration, then, once the FIFO of num_datapoints is full, every
    interval a PushResourcesMonitoringUsage with all of it: memory and each volume, psutil's numbers."""
    import psutil

    from coder_agent.devserver.rpc import control

    control(devserver).resources = {"num_datapoints": 2, "interval": 1, "memory": True, "volumes": [str(short_tmp)]}
    d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token))
    await _ready(d)
    rec = devserver.agent.extra
    await apoll(lambda: rec.get("rpc") and len(rec["rpc"].resource_pushes) >= 2, timeout=30)
    pushes = rec["rpc"].resource_pushes
    assert all(len(p) == 2 for p in pushes)  # the whole window each time
    assert pushes[1][0] == pushes[0][1]  # sliding by one datapoint per interval
    last = pushes[-1][-1]
    vm, du = psutil.virtual_memory(), psutil.disk_usage(str(short_tmp))
    assert last["memory"]["total"] == vm.total
    assert abs(last["memory"]["used"] - (vm.total - vm.available)) < vm.total * 0.1
    vol = last["volumes"][str(short_tmp)]
    assert vol["total"] == du.total and abs(vol["used"] - du.used) < 256 << 20
    assert not rec["rpc"].violations


async def test_item13_older_coderd_without_resource_monitoring(devserver: DevServer, daemon_env: Any,
                                                               spawn_daemon: Any) -> None:
    from coder_agent.devserver.rpc import control

    ctl = control(devserver)
    ctl.unimplemented.add("GetResourcesMonitoringConfiguration")
    ctl.resources = {"num_datapoints": 1, "interval": 1, "memory": True, "volumes": []}
    d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token))
    await _ready(d)
    st = await apoll(lambda: (s := d.api("GET", "/api/v0/status").json()["agent_rpc"])
                     and "GetResourcesMonitoringConfiguration" in s["unavailable_rpcs"] and s, timeout=30)
    assert st["connections"] == 1
    await asyncio.sleep(2)
    assert not devserver.agent.extra["rpc"].resource_pushes
    assert d.stderr().count("coderd does not offer this RPC") == 1


async def test_item9_no_more_log_requests_than_go(devserver: DevServer, daemon_env: Any, spawn_daemon: Any) -> None:
    """Lines printed at once go out in as few BatchCreateLogs as Go's LogSender would send (its
    1 MiB batches); lines that trickle in cost about one request a second, not four."""
    import math

    devserver.agent.scripts = [
        {"display_name": "burst", "script": "seq -f 'line %06g padded to about forty bytes.....' 1 5000"},
        {"display_name": "trickle", "script": "for i in $(seq 1 30); do echo tick $i; sleep 0.1; done"},
    ]
    d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token))
    await _ready(d)
    await apoll(lambda: len(_outputs(devserver, "burst")) == 5000 and len(_outputs(devserver, "trickle")) == 30,
                timeout=60)
    sources = {s["display_name"]: s["log_source_id"] for s in devserver.agent.scripts}
    batches = devserver.agent.extra["rpc"].log_batches
    burst = [b for b in batches if b["source"] == sources["burst"]]
    go = math.ceil(sum(b["wire_size"] for b in burst) / (1 << 20))
    assert len(burst) <= go + 1, [b["count"] for b in burst]  # +1: the run may straddle a flush tick
    trickle = [b for b in batches if b["source"] == sources["trickle"]]
    assert len(trickle) <= 3 + 2, [b["count"] for b in trickle]  # ~3 s of output, a final flush


async def test_item10_devcontainer_placeholder_scripts_are_dropped(devserver: DevServer, daemon_env: Any,
                                                                   spawn_daemon: Any, short_tmp: Path) -> None:
    """coderd's placeholder start script for a manifest devcontainer (same id) never runs while
    devcontainers are enabled (Go's ExtractDevcontainerScripts); other scripts do."""
    import uuid

    dc_id = str(uuid.uuid4())
    devserver.agent.extra["devcontainers"] = [{"id": dc_id, "workspace_folder": str(short_tmp / "proj"),
                                               "name": "proj"}]
    devserver.agent.scripts = [{"id": dc_id, "display_name": "proj devcontainer", "script": "echo placeholder-ran"},
                               {"display_name": "normal", "script": "echo normal-ran"}]
    d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token, CODER_AGENT_DEVCONTAINERS_ENABLE="true"))
    await _ready(d)
    # The folder does not exist, so bringing the devcontainer up fails: START_ERROR, as under Go
    # (tests/devcontainers/test_manifest_up.py brings one up on a real engine).
    await apoll(lambda: "start_error" in [e["state"] for e in devserver.agent.lifecycle], timeout=30)
    await apoll(lambda: _outputs(devserver, "normal") == ["normal-ran"])
    assert not _outputs(devserver, "proj devcontainer")
    done = [c for c in devserver.agent.extra["rpc"].script_completions if c["script_id"] == dc_id]
    assert [c["status"] for c in done] == ["exit_failure"]  # the up's result, not the placeholder's


async def test_item5_script_order_dependencies_and_skips(devserver: DevServer, daemon_env: Any,
                                                         spawn_daemon: Any, short_tmp: Path) -> None:
    """Go's coder_script_order: a script waits for the scripts it depends on; requires=success
    skips it (SKIPPED ScriptCompleted, a "Skipping script" line) when one failed; requires=completion
    only waits. Scripts without rules start at once."""
    import uuid

    a, b, c, d_, e = (str(uuid.uuid4()) for _ in range(5))
    marks = short_tmp / "marks"
    devserver.agent.scripts = [
        {"id": a, "display_name": "A fails", "script": f"sleep 1; echo a >> {marks}; exit 3"},
        {"id": b, "display_name": "B needs A", "script": f"echo b >> {marks}",
         "order_dependencies": [{"script_id": a, "requires": "success"}]},
        {"id": c, "display_name": "C after A", "script": f"echo c >> {marks}",
         "order_dependencies": [{"script_id": a, "requires": "completion"}]},
        {"id": d_, "display_name": "D needs B", "script": f"echo d >> {marks}",
         "order_dependencies": [{"script_id": b, "requires": "success"}]},
        {"id": e, "display_name": "E free", "script": f"echo e >> {marks}"},
    ]
    d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token))
    await _ready(d)
    rec = devserver.agent.extra
    done = await apoll(lambda: "rpc" in rec and (c_ := {x["script_id"]: x for x in rec["rpc"].script_completions})
                       and len(c_) == 5 and c_, timeout=30)
    assert [done[x]["status"] for x in (a, b, c, d_, e)] == ["exit_failure", "skipped", "ok", "skipped", "ok"]
    assert done[b]["exit_code"] == -1 and done[c]["start"] >= done[a]["end"]
    assert marks.read_text().split() == ["e", "a", "c"]  # B and D never ran; E did not wait
    assert _outputs(devserver, "B needs A") == ['Skipping script: dependency "A fails" failed.']
    assert _outputs(devserver, "D needs B") == ['Skipping script: dependency "B needs A" was skipped.']
    await apoll(lambda: "start_error" in [x["state"] for x in devserver.agent.lifecycle])  # A's failure
