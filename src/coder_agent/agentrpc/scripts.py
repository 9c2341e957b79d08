"""Scripts for the agent session: the scripts capability's runner, reporting each run to coderd.

Rules (coder-agent-rpc.md §5.5, §6.11, §6.15):

* Manifest scripts and config-file scripts run through :class:`coder_agent.scripts.ScriptRunner`
  and :class:`coder_agent.scripts.ConfigSession` (start phase, cron, stop phase): one runner, one
  behaviour, whoever asked for the script.
* Every run of a script whose ``id`` came from the manifest produces one ``ScriptCompleted``
  (stage START 0 / STOP 1 / CRON 2 — 0 is meaningful; status OK / EXIT_FAILURE / TIMED_OUT /
  PIPES_LEFT_OPEN; exit code 255 when unknown). Config scripts and manifest scripts without an
  id are not known to coderd and are not reported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from google.protobuf import timestamp_pb2

from ..rpc.proto import agent_pb2
from ..scripts import ScriptResult, ScriptRunner, ScriptSpec, Stage
from .manifest import uuid_bytes

if TYPE_CHECKING:
    from .parts import AgentParts

__all__ = ["ReportingRunner", "make_runner", "phase_specs", "timing"]


class ReportingRunner(ScriptRunner):
    """A :class:`ScriptRunner` that tells ``on_result`` about every finished run."""

    on_result: Callable[[ScriptResult], None] | None = None

    async def run(self, spec: ScriptSpec, stage: Stage) -> ScriptResult:
        result = await super().run(spec, stage)
        if self.on_result is not None:
            self.on_result(result)
        return result

    async def skip(self, spec: ScriptSpec, stage: Stage, reason: str) -> ScriptResult:
        result = await super().skip(spec, stage, reason)
        if self.on_result is not None:
            self.on_result(result)
        return result


def make_runner(parts: AgentParts) -> ReportingRunner:
    s = parts.settings
    return ReportingRunner(parts.sink, directory=s.directory, env=parts.command_env,
                           log_dir=s.log_dir, data_dir=s.state_dir, clock=parts.clock,
                           priority=parts.priority)


def phase_specs(manifest: Mapping[str, Any] | None, config_scripts: Sequence[Any], *,
                devcontainers: bool = False) -> list[ScriptSpec]:
    """Every script of the session: the manifest's, then the config file's.

    With ``devcontainers`` (the feature is on), a manifest script whose id is a manifest
    devcontainer's is left out, as Go's ``ExtractDevcontainerScripts``: coderd sends one per
    devcontainer, a placeholder that only says devcontainers are not enabled."""
    m = manifest or {}
    placeholders = {d["id"] for d in m.get("devcontainers", []) if d.get("id")} if devcontainers else set()
    out = [ScriptSpec.from_manifest(d) for d in m.get("scripts", []) if not (d.get("id") and d["id"] in placeholders)]
    out += [ScriptSpec.from_config(c) for c in config_scripts]
    return out


def _stamp(t: Any) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(t)
    return ts


def timing(result: ScriptResult) -> agent_pb2.Timing:
    """The ScriptCompleted payload for one run."""
    end = max(result.end, result.start)
    return agent_pb2.Timing(script_id=uuid_bytes(result.script_id), start=_stamp(result.start), end=_stamp(end),
                            exit_code=result.exit_code, stage=int(result.stage),  # type: ignore[arg-type]
                            status=int(result.status))  # type: ignore[arg-type]
