"""Children's OOM-killer and CPU priority: the Go agent's CODER_PROC_PRIO_MGMT contract, and a
protected daemon never passing its protection on. Pure planning, then real children, then the
daemon's own scripts reporting what they got."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from coder_agent.devserver import DevServer
from coder_agent.logsink import source_id_for
from coder_agent.procprio import ENV_MGMT, ENV_NICE, ENV_OOM, ChildPriority, plan

from ..conftest import apoll
from ..logs.conftest import outputs

# What a child reports: its oom_score_adj, its nice value (field 19 of /proc/self/stat), and
# whether the management variables reached it.
PROBE = ('echo "oom=$(cat /proc/self/oom_score_adj) nice=$(cut -d" " -f19 /proc/self/stat) '
         'env=${CODER_PROC_PRIO_MGMT:-}${CODER_PROC_OOM_SCORE:-}${CODER_PROC_NICE_SCORE:-}"')


@pytest.mark.parametrize(("own_oom", "want"), [(-500, 0), (-1000, 0), (0, 998), (500, 998), (998, 1000), (1000, 1000)])
def test_managed_default_oom_follows_the_go_agent(own_oom: int, want: int) -> None:
    assert plan({ENV_MGMT: "1"}, own_oom, 0).oom_score_adj == want


def test_managed_explicit_values_and_nice() -> None:
    p = plan({ENV_MGMT: "true", ENV_OOM: "123", ENV_NICE: "7"}, 0, 2)
    assert (p.oom_score_adj, p.nice_increment, p.managed) == (123, 5, True)
    assert plan({ENV_MGMT: "1"}, 0, 0).nice_increment == 5  # default: the agent's + 5
    assert plan({ENV_MGMT: "1"}, 0, 17).nice_increment == 2  # capped at 19
    assert plan({ENV_MGMT: "1", ENV_NICE: "-5"}, 0, 0).nice_increment == 0  # lowering is not tried
    assert plan({ENV_MGMT: "1", ENV_OOM: "junk"}, 200, 0).oom_score_adj == 998  # unparsable: the default


def test_unmanaged_only_undoes_the_daemons_protection() -> None:
    assert plan({}, -500, 0) == ChildPriority(0, 0)
    assert not plan({}, 0, 0).active and not plan({}, 300, 5).active
    assert not plan({ENV_MGMT: "1"}, 0, 0, linux=False).active
    env = {ENV_MGMT: "1", ENV_OOM: "5", "KEEP": "x"}
    assert plan(env, 0, 0).env(env) == {"KEEP": "x"}  # managed: the variables stay with the agent
    assert plan({}, -500, 0).env(env) == env


def _probe(prio: ChildPriority) -> str:
    return subprocess.run(prio.wrap(["sh", "-c", PROBE]), capture_output=True, text=True, check=True,
                          env=prio.env({**os.environ, ENV_MGMT: "1"})).stdout.strip()


def test_real_child_gets_its_values_before_it_runs() -> None:
    with open("/proc/self/oom_score_adj") as f:
        own = int(f.read())
    own_nice = os.getpriority(os.PRIO_PROCESS, 0)
    target = max(own, 0) + 321  # raising needs no privilege
    out = _probe(ChildPriority(target, 3, managed=True))
    assert out == f"oom={target} nice={own_nice + 3} env="


def test_a_refused_value_is_said_and_the_command_still_runs() -> None:
    """Lowering below the floor needs CAP_SYS_RESOURCE (this sandbox's root lacks it; a CI machine
    may have it): either the value is applied or the refusal is said; the command runs either way."""
    r = subprocess.run(ChildPriority(-1000, 0).wrap(["sh", "-c", "echo ran; cat /proc/self/oom_score_adj"]),
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("ran\n")
    applied = r.stdout.split()[1] == "-1000"
    assert applied or "coder-agent: cannot set oom_score_adj to -1000" in r.stderr, r


def _config(tmp: Path) -> Path:
    cfg = tmp / "config.toml"
    cfg.write_text('[[scripts]]\ndisplay_name = "probe"\nscript = \'\'\'' + PROBE + "'''\n")
    return cfg


async def test_prio_mgmt_env_sets_scripts_priority(  # type: ignore[no-untyped-def]
        devserver: DevServer, daemon_env, spawn_daemon, short_tmp: Path) -> None:
    env = daemon_env(devserver.url, devserver.agent.token, CODER_AGENT_CONFIG=str(_config(short_tmp)),
                     CODER_PROC_PRIO_MGMT="1", CODER_PROC_OOM_SCORE="777", CODER_PROC_NICE_SCORE="11")
    d = spawn_daemon(env)
    await asyncio.to_thread(d.wait_ready)
    nice = max(11, os.getpriority(os.PRIO_PROCESS, 0))
    await apoll(lambda: outputs(devserver, source_id_for("probe")) == [f"oom=777 nice={nice} env="])


def test_the_prelude_never_interpolates_the_command(tmp_path: Path) -> None:
    """The prelude is a literal; the command's words reach it as "$@" and are passed on untouched."""
    marker = tmp_path / "pwned"
    hostile = f"$(touch {marker}); `touch {marker}`; * ' \" \\"
    out = subprocess.run(ChildPriority(None, 1).wrap(["printf", "%s", hostile]), capture_output=True, text=True,
                         check=True).stdout
    assert out == hostile and not marker.exists()
