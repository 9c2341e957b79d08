"""The manifest: protobuf ``Manifest`` → the JSON-like dict the daemon shares (pure).

Rules (coder-agent-rpc.md §4.2, §5.3, §6.9, §6.12):

* UUIDs are 16 raw bytes on the wire and canonical strings here. ``agent_id`` must be a
  non-nil UUID (else :class:`~coder_agent.errors.ProtocolError`); optional ids that are
  absent or malformed become ``""`` (old servers send scripts without ``id``).
* Durations: script ``timeout`` and app healthcheck ``interval`` are real seconds. Metadata
  ``interval``/``timeout`` carry the number of SECONDS in the nanosecond count (coderd builds
  them with ``Duration(N)``): ``seconds * 1e9 + nanos`` is read as an integer of seconds.
* ``directory`` is expanded as the Go agent does: ``$VARS`` (unknown ones → ""), a leading
  ``~``, and a relative path is taken under the home directory; empty stays empty (reported so
  in UpdateStartup; commands then run in ``CODER_AGENT_DIRECTORY`` or ``$HOME``).
* Secrets (``Manifest.secrets``) never enter the shared dict: only their env names and file
  paths do; values stay in :class:`Converted.secrets` for the child environment.
* :func:`redacted` is the local view (``GET /api/v0/manifest``): environment values replaced.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import duration_pb2

from ..errors import REDACTED, ProtocolError
from ..rpc.proto import agent_pb2

__all__ = [
    "HEALTH_NAMES",
    "REDACTED",
    "Converted",
    "convert",
    "duration_seconds",
    "expand_directory",
    "metadata_seconds",
    "redacted",
    "uuid_bytes",
    "uuid_str",
]

HEALTH_NAMES = {0: "unspecified", 1: "disabled", 2: "initializing", 3: "healthy", 4: "unhealthy"}
_SHARING = {0: "unspecified", 1: "owner", 2: "authenticated", 3: "public", 4: "organization"}
_VAR = re.compile(r"\$(?:\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def uuid_str(raw: bytes, *, what: str = "", required: bool = False) -> str:
    """16 raw bytes → canonical UUID text; ``""`` for absent/malformed unless ``required``."""
    if len(raw) == 16 and (raw != bytes(16) or not required):
        return str(uuid.UUID(bytes=raw))
    if required:
        raise ProtocolError(f"manifest {what or 'id'} is not a non-nil 16-byte UUID ({len(raw)} bytes)")
    return ""


def uuid_bytes(text: str) -> bytes:
    """Canonical UUID text → 16 raw bytes (ValueError for anything else)."""
    return uuid.UUID(text).bytes


def duration_seconds(d: duration_pb2.Duration) -> float:
    """A proper protobuf Duration in seconds."""
    return d.seconds + d.nanos / 1e9


def metadata_seconds(d: duration_pb2.Duration) -> int:
    """A metadata Duration: the integer ``seconds*1e9 + nanos`` IS the number of seconds (§6.9)."""
    return int(d.seconds) * 1_000_000_000 + int(d.nanos)


def expand_directory(raw: str, env: Mapping[str, str], home: str) -> str:
    """Expand like the Go agent (``expandPathToAbs``): empty stays empty; ``$VAR``/``${VAR}``
    (unknown → ""), ``~``, relative → under home."""
    if not raw.strip():
        return ""
    path = _VAR.sub(lambda m: env.get(m.group(1) or m.group(2) or "", ""), raw).strip()
    if not path:
        return home
    if path == "~" or path.startswith("~/"):
        path = home + path[1:]
    if not os.path.isabs(path):
        path = os.path.join(home, path)
    return os.path.normpath(path)


@dataclass
class Converted:
    """The result of :func:`convert`: the shareable dict and what must stay private."""

    manifest: dict[str, Any]
    secrets: list[dict[str, Any]] = field(default_factory=list)  # {env_name, file_path, value: bytes}


def convert(m: agent_pb2.Manifest, *, env: Mapping[str, str] | None = None, home: str | None = None) -> Converted:
    """Convert a received Manifest. Raises ProtocolError when ``agent_id`` is unusable."""
    env = dict(os.environ if env is None else env)
    home = home or env.get("HOME") or os.path.expanduser("~")
    manifest_env = dict(m.environment_variables)
    apps = []
    for a in m.apps:
        hc = a.healthcheck
        apps.append({
            "id": uuid_str(a.id),
            "slug": a.slug,
            "display_name": a.display_name,
            "url": a.url,
            "command": a.command,
            "icon": a.icon,
            "external": a.external,
            "subdomain": a.subdomain,
            "subdomain_name": a.subdomain_name,
            "sharing_level": _SHARING.get(a.sharing_level, "unspecified"),
            "hidden": a.hidden,
            "healthcheck": {"url": hc.url, "interval": duration_seconds(hc.interval), "threshold": hc.threshold},
            "health": HEALTH_NAMES.get(a.health, "unspecified"),
        })
    scripts = []
    for s in m.scripts:
        scripts.append({
            "id": uuid_str(s.id),
            "log_source_id": uuid_str(s.log_source_id),
            "display_name": s.display_name,
            "script": s.script,
            "log_path": s.log_path,
            "cron": s.cron,
            "run_on_start": s.run_on_start,
            "run_on_stop": s.run_on_stop,
            "start_blocks_login": s.start_blocks_login,
            "timeout": duration_seconds(s.timeout),
            # Go's coder_script_order rules: unspecified requires acts as "success" (Go skips on anything
            # but COMPLETION).
            "order_dependencies": [{"script_id": uuid_str(dep.script_id),
                                    "requires": "completion" if dep.requires == dep.COMPLETION else "success"}
                                   for dep in s.order_dependencies if uuid_str(dep.script_id)],
        })
    metadata = [{
        "key": d.key,
        "display_name": d.display_name,
        "script": d.script,
        "interval": metadata_seconds(d.interval),
        "timeout": metadata_seconds(d.timeout),
    } for d in m.metadata]
    devcontainers = [{
        "id": uuid_str(d.id),
        "workspace_folder": d.workspace_folder,
        "config_path": d.config_path,
        "name": d.name,
        "subagent_id": uuid_str(d.subagent_id) if d.HasField("subagent_id") else "",
    } for d in m.devcontainers]
    secrets = [{"env_name": s.env_name, "file_path": s.file_path, "value": bytes(s.value)} for s in m.secrets]
    lookup = {**env, **manifest_env}
    data: dict[str, Any] = {
        "agent_id": uuid_str(m.agent_id, what="agent_id", required=True),
        "agent_name": m.agent_name,
        "owner": m.owner_username,
        "workspace_id": uuid_str(m.workspace_id),
        "workspace_name": m.workspace_name,
        "parent_id": uuid_str(m.parent_id) if m.HasField("parent_id") else "",
        "directory": expand_directory(m.directory, lookup, home),
        "directory_raw": m.directory,
        "environment": manifest_env,
        "vs_code_port_proxy_uri": m.vs_code_port_proxy_uri,
        "motd_path": m.motd_path,
        "git_auth_configs": m.git_auth_configs,
        "disable_direct_connections": m.disable_direct_connections,
        "apps": apps,
        "scripts": scripts,
        "metadata": metadata,
        "devcontainers": devcontainers,
        "secrets": [{"env_name": s["env_name"], "file_path": s["file_path"]} for s in secrets],
    }
    return Converted(data, secrets)


def redacted(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A copy safe to show locally: environment values replaced by ``[REDACTED]``."""
    out = dict(manifest)
    out["environment"] = {k: REDACTED for k in dict(manifest.get("environment") or {})}
    return out
