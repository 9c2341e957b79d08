"""The devserver's ``/api/v2/workspaceagents/me/rpc``: coderd's agent RPC, server side.

Stack: aiohttp websocket (binary messages = one byte stream) → yamux SERVER session
(:class:`~coder_agent.rpc.transport.YamuxConnection` with ``client=False``) → one dRPC unary
call per accepted stream, parsed by :class:`~coder_agent.rpc.drpc.ServerStream` (written apart
from the client half, so a codec bug cannot hide in both) → the Agent service below.

coderd's rules kept here (coder-agent-rpc.md §1.2, §1.3, §2.5, §5):

* Upgrade: ``version`` absent → 2.0; unparsable, another major, or a minor above ours → 400
  "Unknown or unsupported API version" before the upgrade; auth is the REST middleware's (401).
  An ``Origin`` whose host differs from ``Host`` is refused (403), as coder/websocket does.
* Liveness: we ping the client every ``ping_interval``; no answer within ``inactive_timeout``
  → the session is closed ("ping timeout").
* UpdateStartup: ``version`` must be semver with a leading "v"; no UNSPECIFIED subsystem.
* UpdateLifecycle: unknown state → error. coderd does not check the order; as a conformance
  checker we refuse a state lower than the last one received (equal = a replay, accepted),
  except STARTING, which begins a new life of the agent (restart, prebuild reinit).
* BatchCreateLogs: empty list OK; 16-byte source id (all zero → "External"); unknown level →
  INFO; NUL bytes → the database error; the same 1 MiB per-agent cap as the REST route, after
  which every call answers ``log_limit_exceeded = true``.
* BatchUpdateMetadata: values > 2048 bytes truncated with an error, errors > 2048 replaced;
  past 6144 key bytes the rest is dropped and an error returned; unknown keys ignored;
  ``collected_at`` replaced by our time.
* BatchUpdateAppHealths: unknown id, app without healthcheck URL, or UNSPECIFIED → the whole
  batch fails. ScriptCompleted: 16-byte known script id, non-zero start/end, start ≤ end.
* UpdateStats: ``stats`` unset is only a question for ``report_interval`` (counted); reports are
  recorded in ``stats`` (session counts: the map and the deprecated fields).
* ReportConnection: a 16-byte id and an action are required; each event is recorded in
  ``connection_reports``.
* UpdateAppStatus: the app-status rules of the REST route (160-byte message, known slug).
* GetResourcesMonitoringConfiguration: :attr:`RpcControl.resources` (coderd's defaults: 20
  datapoints every 10 s; memory only when a memory monitor exists, here off unless set).
  PushResourcesMonitoringUsage: as coderd, an enabled volume missing from a datapoint is an error
  ("volume not found"); datapoints are recorded in ``resource_pushes``.
* Methods listed in :attr:`RpcControl.unimplemented` answer code 12, those in
  :attr:`RpcControl.unknown` answer ``unknown rpc`` (code 0), as old servers do.

The Tailnet service (Coordinate, StreamDERPMaps) shares the mux, as in coderd: see :mod:`.tailnet`.

Everything received is recorded on the :class:`DevAgent`: ``lifecycle`` (``{"state": name}``
entries), ``logs``, ``app_statuses``, and :func:`record` (``agent.extra["rpc"]``) for the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web
from google.protobuf import duration_pb2, empty_pb2, timestamp_pb2
from google.protobuf.message import DecodeError, Message

from ..rpc import drpc
from ..rpc.proto import agent_pb2
from ..rpc.transport import ConnectionClosedError, Stream, StreamResetError, YamuxConnection
from . import tailnet
from .state import EXTERNAL_SOURCE, MAX_LOGS_LENGTH, DevAgent

if TYPE_CHECKING:
    from .app import DevServer

__all__ = ["RpcControl", "RpcRecord", "build_manifest", "control", "install", "record"]

SERVER_MAJOR = 2
MAX_WS_MESSAGE = 4 << 20
METADATA_VALUE_LIMIT = 2048
METADATA_TOTAL_LIMIT = 6144
_NS = uuid.UUID("0c4e1f7a-8d62-4c0e-a3c5-2f7d2b9e4a10")
_LEVELS = {1: "trace", 2: "debug", 3: "info", 4: "warn", 5: "error"}
_APP_STATES = {0: "working", 1: "idle", 2: "complete", 3: "failure"}
_HEALTH = {1: "disabled", 2: "initializing", 3: "healthy", 4: "unhealthy"}
_HEALTH_VALUES = {v: k for k, v in _HEALTH.items()}
# golang.org/x/mod/semver: "v" + major[.minor[.patch]] (shorthands allowed) + prerelease/build.
_SEMVER = re.compile(
    r"^v(0|[1-9]\d*)(\.(0|[1-9]\d*)(\.(0|[1-9]\d*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?)?)?$"
)
_VERSION = re.compile(r"^(\d+)\.(\d+)$")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ts(t: timestamp_pb2.Timestamp) -> dt.datetime | None:
    if t.seconds == 0 and t.nanos == 0:
        return None
    return t.ToDatetime(tzinfo=dt.UTC)


class RpcFailure(Exception):
    """A handler's error reply: dRPC Error packet with ``code`` and ``text``."""

    def __init__(self, text: str, code: int = 0) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


@dataclass
class CallRecord:
    method: str  # short name, e.g. "GetManifest"
    connection: int  # 1-based connection number of this agent
    stream_id: int
    at: float  # time.monotonic()
    error: str = ""


@dataclass
class RpcRecord:
    """What one agent did over RPC (``agent.extra["rpc"]``)."""

    connections: int = 0
    connected: bool = False
    first_connected_at: dt.datetime | None = None
    last_connected_at: dt.datetime | None = None
    disconnected_at: dt.datetime | None = None
    upgrades: list[dict[str, Any]] = field(default_factory=list)  # {query, headers}
    calls: list[CallRecord] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)
    max_in_flight: dict[str, int] = field(default_factory=dict)
    startups: list[dict[str, Any]] = field(default_factory=list)
    lifecycle_raw: list[dict[str, Any]] = field(default_factory=list)  # {state: int, changed_at}
    script_completions: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> latest
    metadata_reports: list[dict[str, Any]] = field(default_factory=list)  # {at, keys: {key: value}}
    app_health: dict[str, str] = field(default_factory=dict)  # app id -> health name
    app_health_reports: list[dict[str, str]] = field(default_factory=list)
    stats_probes: int = 0
    # ReportConnection: {at, id (UUID str), action, type (enum names), app_name, ip, status_code, reason}
    connection_reports: list[dict[str, Any]] = field(default_factory=list)
    stats: list[dict[str, Any]] = field(default_factory=list)  # {at, stats: dict}
    log_batches: list[dict[str, Any]] = field(default_factory=list)  # {source, count, size}
    violations: list[str] = field(default_factory=list)
    streams_raw: list[bytes] = field(default_factory=list)  # client bytes per stream (capture on)
    pings_ok: int = 0
    resource_pushes: list[list[dict[str, Any]]] = field(default_factory=list)  # per push, its datapoints

    def calls_named(self, method: str) -> list[CallRecord]:
        return [c for c in self.calls if c.method == method]


def record(agent: DevAgent) -> RpcRecord:
    rec = agent.extra.get("rpc")
    if not isinstance(rec, RpcRecord):
        rec = RpcRecord()
        agent.extra["rpc"] = rec
    return rec


@dataclass
class RpcControl:
    """Knobs and faults of the RPC endpoint (one per DevServer)."""

    max_minor: int = 13
    report_interval: float = 10.0
    ping_interval: float = 15.0
    inactive_timeout: float = 30.0
    unimplemented: set[str] = field(default_factory=set)  # short method names → code 12
    unknown: set[str] = field(default_factory=set)  # short method names → "unknown rpc"
    split_bytes: bool = False  # send every byte as its own websocket message
    blackhole: bool = False  # stop reading, answering and pinging (a hung peer)
    capture: bool = False  # keep the client's raw bytes per stream
    handler_delay: dict[str, float] = field(default_factory=dict)  # short name -> seconds
    # GetResourcesMonitoringConfiguration's answer: num_datapoints, interval (s), memory, volumes (paths)
    resources: dict[str, Any] = field(default_factory=lambda: {"num_datapoints": 20, "interval": 10,
                                                                "memory": False, "volumes": []})
    connections: list[_ServerConn] = field(default_factory=list)

    async def drop(self, *, abort: bool = False) -> int:
        """Close every live RPC websocket (abort: without a close frame). Returns how many."""
        conns = list(self.connections)
        for c in conns:
            await c.drop(abort=abort)
        return len(conns)


_CONTROLS: weakref.WeakKeyDictionary[DevServer, RpcControl] = weakref.WeakKeyDictionary()


def control(ds: DevServer) -> RpcControl:
    """The RPC knobs of ``ds`` (created on first use)."""
    ctl = _CONTROLS.get(ds)
    if ctl is None:
        ctl = RpcControl()
        _CONTROLS[ds] = ctl
    return ctl


# ---- manifest ----------------------------------------------------------------------------


def _stable_id(agent: DevAgent, item: dict[str, Any], key: str, name: str) -> str:
    value = item.get(key)
    if not value:
        value = str(uuid.uuid5(_NS, f"{agent.id}/{key}/{name}"))
        item[key] = value
    return str(value)


def _metadata_duration(seconds: Any) -> duration_pb2.Duration:
    # coderd's quirk: Duration(N) with N seconds → N nanoseconds on the wire (§6.9).
    n = int(seconds or 0)
    return duration_pb2.Duration(seconds=n // 1_000_000_000, nanos=n % 1_000_000_000)


def _real_duration(seconds: Any) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(float(seconds or 0) * 1e9))
    return d


def build_manifest(agent: DevAgent) -> agent_pb2.Manifest:
    """The Manifest coderd would send for ``agent`` (ids are filled into the dicts once)."""
    m = agent_pb2.Manifest(
        agent_id=uuid.UUID(agent.id).bytes,
        workspace_id=uuid.UUID(agent.workspace_id).bytes,
        agent_name=agent.name,
        owner_username=str(agent.extra.get("owner_username", "developer")),
        workspace_name=str(agent.extra.get("workspace_name", "dev")),
        directory=agent.directory,
        vs_code_port_proxy_uri=str(agent.extra.get("vs_code_port_proxy_uri", "")),
    )
    m.environment_variables.update({str(k): str(v) for k, v in agent.environment.items()})
    for a in agent.apps:
        slug = str(a.get("slug", ""))
        hc = a.get("healthcheck") or {}
        health = a.get("health") or ("initializing" if hc.get("url") else "disabled")
        m.apps.append(agent_pb2.WorkspaceApp(
            id=uuid.UUID(_stable_id(agent, a, "id", slug)).bytes,
            slug=slug,
            display_name=str(a.get("display_name", slug)),
            url=str(a.get("url", "")),
            command=str(a.get("command", "")),
            sharing_level=agent_pb2.WorkspaceApp.OWNER,
            healthcheck=agent_pb2.WorkspaceApp.Healthcheck(
                url=str(hc.get("url", "")), interval=_real_duration(hc.get("interval", 0)),
                threshold=int(hc.get("threshold", 0))),
            health=_HEALTH_VALUES.get(str(health), agent_pb2.WorkspaceApp.DISABLED),  # type: ignore[arg-type]
        ))
    for i, s in enumerate(agent.scripts):
        name = str(s.get("display_name", f"script {i}"))
        source = _stable_id(agent, s, "log_source_id", f"source/{name}/{i}")
        agent.log_sources.setdefault(source, {"workspace_agent_id": agent.id, "id": source,
                                              "created_at": _now().isoformat(), "display_name": name,
                                              "icon": str(s.get("icon", ""))})
        sid = b"" if s.get("id") is False else uuid.UUID(_stable_id(agent, s, "id", f"script/{name}/{i}")).bytes
        m.scripts.append(agent_pb2.WorkspaceAgentScript(
            id=sid, log_source_id=uuid.UUID(source).bytes, display_name=name,
            script=str(s.get("script", "")), cron=str(s.get("cron", "")),
            run_on_start=bool(s.get("run_on_start", True)), run_on_stop=bool(s.get("run_on_stop", False)),
            start_blocks_login=bool(s.get("start_blocks_login", False)),
            timeout=_real_duration(s.get("timeout", 0)), log_path=str(s.get("log_path", "")),
            order_dependencies=[agent_pb2.WorkspaceAgentScript.OrderDependency(
                script_id=uuid.UUID(str(dep["script_id"])).bytes,
                requires=(agent_pb2.WorkspaceAgentScript.OrderDependency.COMPLETION
                          if dep.get("requires") == "completion" else
                          agent_pb2.WorkspaceAgentScript.OrderDependency.SUCCESS))
                for dep in s.get("order_dependencies", [])],
        ))
    for md in agent.metadata:
        m.metadata.append(agent_pb2.WorkspaceAgentMetadata.Description(
            key=str(md.get("key", "")), display_name=str(md.get("display_name", md.get("key", ""))),
            script=str(md.get("script", "")), interval=_metadata_duration(md.get("interval", 0)),
            timeout=_metadata_duration(md.get("timeout", 0)),
        ))
    for i, d in enumerate(agent.extra.get("devcontainers", [])):
        m.devcontainers.append(agent_pb2.WorkspaceAgentDevcontainer(
            id=uuid.UUID(_stable_id(agent, d, "id", f"devcontainer/{i}")).bytes,
            workspace_folder=str(d.get("workspace_folder", "")), config_path=str(d.get("config_path", "")),
            name=str(d.get("name", "")),
        ))
    for sec in agent.extra.get("secrets", []):
        m.secrets.append(agent_pb2.WorkspaceSecret(env_name=str(sec.get("env_name", "")),
                                                   file_path=str(sec.get("file_path", "")),
                                                   value=str(sec.get("value", "")).encode()))
    return m


# ---- the Agent service -------------------------------------------------------------------


Handler = Callable[["_ServerConn", bytes], Awaitable[Message | None]]


class _Service:
    def __init__(self, ctl: RpcControl, agent: DevAgent, ds: DevServer) -> None:
        self.ctl = ctl
        self.agent = agent
        self.ds = ds
        self.rec = record(agent)
        self.handlers: dict[str, tuple[type[Message], Callable[[Any], Awaitable[Message]]]] = {
            "GetManifest": (agent_pb2.GetManifestRequest, self.get_manifest),
            "GetServiceBanner": (agent_pb2.GetServiceBannerRequest, self.get_service_banner),
            "GetAnnouncementBanners": (agent_pb2.GetAnnouncementBannersRequest, self.get_banners),
            "UpdateStartup": (agent_pb2.UpdateStartupRequest, self.update_startup),
            "UpdateLifecycle": (agent_pb2.UpdateLifecycleRequest, self.update_lifecycle),
            "BatchCreateLogs": (agent_pb2.BatchCreateLogsRequest, self.batch_create_logs),
            "BatchUpdateMetadata": (agent_pb2.BatchUpdateMetadataRequest, self.batch_update_metadata),
            "BatchUpdateAppHealths": (agent_pb2.BatchUpdateAppHealthRequest, self.batch_update_app_healths),
            "UpdateStats": (agent_pb2.UpdateStatsRequest, self.update_stats),
            "ScriptCompleted": (agent_pb2.WorkspaceAgentScriptCompletedRequest, self.script_completed),
            "UpdateAppStatus": (agent_pb2.UpdateAppStatusRequest, self.update_app_status),
            "GetResourcesMonitoringConfiguration": (agent_pb2.GetResourcesMonitoringConfigurationRequest,
                                                    self.get_resources_config),
            "PushResourcesMonitoringUsage": (agent_pb2.PushResourcesMonitoringUsageRequest, self.push_resources),
            "ReportConnection": (agent_pb2.ReportConnectionRequest, self.report_connection),
        }

    async def call(self, full_method: str, request: bytes) -> bytes:
        prefix = "/coder.agent.v2.Agent/"
        name = full_method[len(prefix):] if full_method.startswith(prefix) else ""
        if not name or name in self.ctl.unknown:
            raise RpcFailure(f'protocol error: unknown rpc: "{full_method}"')
        if name in self.ctl.unimplemented:
            raise RpcFailure(f"{name} is not implemented", drpc.UNIMPLEMENTED)
        entry = self.handlers.get(name)
        if entry is None:
            # Real coderd implements the rest; this fake does not need them.
            raise RpcFailure("Unimplemented", drpc.UNIMPLEMENTED)
        req_type, fn = entry
        msg = req_type()
        try:
            msg.ParseFromString(request)
        except DecodeError as e:
            raise RpcFailure(f"proto: cannot parse invalid wire-format data: {e}") from None
        delay = self.ctl.handler_delay.get(name)
        if delay:
            await asyncio.sleep(delay)
        resp = await fn(msg)
        return resp.SerializeToString()

    async def get_manifest(self, _: agent_pb2.GetManifestRequest) -> Message:
        m = build_manifest(self.agent)
        if self.ds.tailnet:
            from . import tailnet

            m.derp_map.CopyFrom(tailnet.server(self.ds).derp_map)
        return m

    async def get_service_banner(self, _: Any) -> Message:
        return agent_pb2.ServiceBanner(enabled=False)

    async def get_banners(self, _: Any) -> Message:
        return agent_pb2.GetAnnouncementBannersResponse()

    async def update_startup(self, req: agent_pb2.UpdateStartupRequest) -> Message:
        st = req.startup
        if not _SEMVER.match(st.version):
            raise RpcFailure(f"invalid agent semver version {st.version!r}")
        if any(s == agent_pb2.Startup.SUBSYSTEM_UNSPECIFIED for s in st.subsystems):
            raise RpcFailure("invalid agent subsystem: unspecified")
        self.rec.startups.append({"version": st.version, "expanded_directory": st.expanded_directory,
                                  "subsystems": [agent_pb2.Startup.Subsystem.Name(s) for s in st.subsystems]})
        return st

    async def update_lifecycle(self, req: agent_pb2.UpdateLifecycleRequest) -> Message:
        lc = req.lifecycle
        if lc.state not in agent_pb2.Lifecycle.State.values() or lc.state == agent_pb2.Lifecycle.STATE_UNSPECIFIED:
            raise RpcFailure(f"unknown lifecycle state {lc.state}")
        last = self.rec.lifecycle_raw[-1]["state"] if self.rec.lifecycle_raw else 0
        # STARTING after anything is a new life of the agent (prebuild reinit, agent restart):
        # coderd explicitly handles it (sets started_at, clears ready_at).
        if lc.state < last and lc.state != agent_pb2.Lifecycle.STARTING:
            msg = (f"lifecycle went backwards: {agent_pb2.Lifecycle.State.Name(last)} → "
                   f"{agent_pb2.Lifecycle.State.Name(lc.state)}")
            self.rec.violations.append(msg)
            raise RpcFailure(msg)
        changed = _ts(lc.changed_at)
        self.rec.lifecycle_raw.append({"state": lc.state, "changed_at": changed})
        if lc.state != last:
            self.agent.lifecycle.append({
                "state": agent_pb2.Lifecycle.State.Name(lc.state).lower(),
                "changed_at": (changed or _now()).isoformat(),
            })
        return lc

    async def batch_create_logs(self, req: agent_pb2.BatchCreateLogsRequest) -> Message:
        agent = self.agent
        if agent.logs_overflowed:
            return agent_pb2.BatchCreateLogsResponse(log_limit_exceeded=True)
        if not req.logs:
            return agent_pb2.BatchCreateLogsResponse()
        if len(req.log_source_id) != 16:
            raise RpcFailure(f"parse log source ID: invalid UUID length: {len(req.log_source_id)}")
        source = str(uuid.UUID(bytes=req.log_source_id))
        if uuid.UUID(source).int == 0:
            source = EXTERNAL_SOURCE
            agent.log_sources.setdefault(source, {"id": source, "display_name": "External",
                                                  "icon": "/emojis/1f310.png", "workspace_agent_id": agent.id})
        rows: list[dict[str, Any]] = []
        size = 0
        wire = 0
        for log in req.logs:
            if "\x00" in log.output:
                raise RpcFailure('insert logs: invalid byte sequence for encoding "UTF8": 0x00')
            size += len(log.output.encode("utf-8"))
            wire += len(log.output.encode("utf-8")) + 21
            created = _ts(log.created_at)
            rows.append({"log_source_id": source, "output": log.output, "level": _LEVELS.get(log.level, "info"),
                         "created_at": created.isoformat() if created else None,
                         "received_at": _now().isoformat()})
        self.rec.log_batches.append({"source": source, "count": len(rows), "size": size,
                                     "wire_size": wire})
        if agent.logs_length + size > MAX_LOGS_LENGTH:
            agent.logs_overflowed = True
            return agent_pb2.BatchCreateLogsResponse(log_limit_exceeded=True)
        agent.logs_length += size
        agent.logs.extend(rows)
        return agent_pb2.BatchCreateLogsResponse()

    async def batch_update_metadata(self, req: agent_pb2.BatchUpdateMetadataRequest) -> Message:
        known = {str(md.get("key")) for md in self.agent.metadata}
        total = 0
        error = ""
        report: dict[str, str] = {}
        for md in req.metadata:
            total += len(md.key)
            if total > METADATA_TOTAL_LIMIT:
                error = f"metadata keys of {total} bytes exceed {METADATA_TOTAL_LIMIT} bytes; discarding the rest"
                break
            value, err = md.result.value, md.result.error
            if len(value.encode()) > METADATA_VALUE_LIMIT:
                err = f"value of {len(value.encode())} bytes exceeded {METADATA_VALUE_LIMIT} bytes"
                value = value.encode()[:METADATA_VALUE_LIMIT].decode("utf-8", "ignore")
            if len(err.encode()) > METADATA_VALUE_LIMIT:
                err = f"error of {len(err.encode())} bytes exceeded {METADATA_VALUE_LIMIT} bytes"
            if md.key not in known:
                continue
            self.rec.metadata[md.key] = {"value": value, "error": err, "collected_at": _now().isoformat(),
                                         "agent_collected_at": _ts(md.result.collected_at)}
            report[md.key] = value
        self.rec.metadata_reports.append({"at": time.monotonic(), "keys": report})
        if error:
            raise RpcFailure(error)
        return agent_pb2.BatchUpdateMetadataResponse()

    async def batch_update_app_healths(self, req: agent_pb2.BatchUpdateAppHealthRequest) -> Message:
        apps = {str(a.get("id")): a for a in self.agent.apps if a.get("id")}
        new: dict[str, str] = {}
        for u in req.updates:
            if len(u.id) != 16:
                raise RpcFailure(f"parse workspace app ID: invalid UUID length: {len(u.id)}")
            app_id = str(uuid.UUID(bytes=u.id))
            app = apps.get(app_id)
            if app is None:
                raise RpcFailure(f"workspace app {app_id} not found")
            if not (app.get("healthcheck") or {}).get("url"):
                raise RpcFailure(f"workspace app {app.get('slug')!r} does not have healthchecks enabled")
            if u.health not in _HEALTH:
                raise RpcFailure(f"unknown health status {u.health}")
            new[app_id] = _HEALTH[u.health]
        self.rec.app_health.update(new)
        self.rec.app_health_reports.append(new)
        return agent_pb2.BatchUpdateAppHealthResponse()

    async def update_stats(self, req: agent_pb2.UpdateStatsRequest) -> Message:
        d = duration_pb2.Duration()
        d.FromNanoseconds(int(self.ctl.report_interval * 1e9))
        if not req.HasField("stats"):
            self.rec.stats_probes += 1
        else:
            s = req.stats
            self.rec.stats.append({"at": time.monotonic(), "connection_count": s.connection_count,
                                   "connection_median_latency_ms": s.connection_median_latency_ms,
                                   "rx_bytes": s.rx_bytes, "tx_bytes": s.tx_bytes,
                                   "rx_packets": s.rx_packets, "tx_packets": s.tx_packets,
                                   "connections_by_proto": dict(s.connections_by_proto),
                                   "session_counts": dict(s.session_counts),
                                   "session_count_fields": {"ssh": s.session_count_ssh,
                                                            "vscode": s.session_count_vscode,
                                                            "jetbrains": s.session_count_jetbrains,
                                                            "reconnecting_pty": s.session_count_reconnecting_pty},
                                   "metrics": [(mt.name, mt.value) for mt in s.metrics],
                                   "metric_details": [{"name": mt.name, "value": mt.value,
                                                       "type": agent_pb2.Stats.Metric.Type.Name(mt.type),
                                                       "labels": {lb.name: lb.value for lb in mt.labels}}
                                                      for mt in s.metrics]})
        return agent_pb2.UpdateStatsResponse(report_interval=d)

    async def report_connection(self, req: agent_pb2.ReportConnectionRequest) -> Message:
        c = req.connection
        if len(c.id) != 16:
            raise RpcFailure("invalid connection id: want 16 bytes")
        if c.action == agent_pb2.Connection.ACTION_UNSPECIFIED:
            raise RpcFailure("connection action is unspecified")
        self.rec.connection_reports.append({
            "at": time.monotonic(), "id": str(uuid.UUID(bytes=c.id)),
            "action": agent_pb2.Connection.Action.Name(c.action), "type": agent_pb2.Connection.Type.Name(c.type),
            "app_name": c.app_name, "ip": c.ip, "status_code": c.status_code,
            "reason": c.reason if c.HasField("reason") else None,
            "timestamp": c.timestamp.ToDatetime(dt.UTC) if c.HasField("timestamp") else None})
        return empty_pb2.Empty()

    async def script_completed(self, req: agent_pb2.WorkspaceAgentScriptCompletedRequest) -> Message:
        t = req.timing
        if len(t.script_id) != 16:
            raise RpcFailure(f"script id: invalid UUID length: {len(t.script_id)}")
        sid = str(uuid.UUID(bytes=t.script_id))
        if sid not in {str(s.get("id")) for s in self.agent.scripts}:
            raise RpcFailure(f"script {sid} not found")
        start, end = _ts(t.start), _ts(t.end)
        if start is None or end is None:
            raise RpcFailure("script start time and end time are required")
        if start > end:
            raise RpcFailure("script start time must be before its end time")
        self.rec.script_completions.append({
            "script_id": sid, "start": start, "end": end, "exit_code": t.exit_code,
            "stage": agent_pb2.Timing.Stage.Name(t.stage).lower(),
            "status": agent_pb2.Timing.Status.Name(t.status).lower(),
        })
        return agent_pb2.WorkspaceAgentScriptCompletedResponse()

    async def get_resources_config(self, _: Any) -> Message:
        r = self.ctl.resources
        R = agent_pb2.GetResourcesMonitoringConfigurationResponse
        resp = R(config=R.Config(num_datapoints=int(r["num_datapoints"]),
                                 collection_interval_seconds=int(r["interval"])),
                 volumes=[R.Volume(enabled=True, path=str(p)) for p in r.get("volumes", [])])
        if r.get("memory"):
            resp.memory.CopyFrom(R.Memory(enabled=True))
        return resp

    async def push_resources(self, req: agent_pb2.PushResourcesMonitoringUsageRequest) -> Message:
        wanted = {str(p) for p in self.ctl.resources.get("volumes", [])}
        points = []
        for dp in req.datapoints:
            got = {v.volume for v in dp.volumes}
            missing = sorted(wanted - got)
            if missing:
                raise RpcFailure(f"volume not found: {missing[0]}")
            points.append({"collected_at": _ts(dp.collected_at),
                           "memory": ({"total": dp.memory.total, "used": dp.memory.used}
                                      if dp.HasField("memory") else None),
                           "volumes": {v.volume: {"total": v.total, "used": v.used} for v in dp.volumes}})
        self.rec.resource_pushes.append(points)
        return agent_pb2.PushResourcesMonitoringUsageResponse()

    async def update_app_status(self, req: agent_pb2.UpdateAppStatusRequest) -> Message:
        if len(req.message.encode()) > 160:
            raise RpcFailure("Message is too long.")
        if req.state not in _APP_STATES:
            raise RpcFailure(f"Invalid state provided: {req.state}")
        if req.slug not in self.agent.app_slugs:
            raise RpcFailure(f"Failed to get workspace app: no app found with slug {req.slug!r}")
        self.agent.app_statuses.append({"app_slug": req.slug, "state": _APP_STATES[req.state],
                                        "message": req.message, "uri": req.uri, "created_at": _now().isoformat(),
                                        "via": "rpc"})
        return agent_pb2.UpdateAppStatusResponse()


# ---- connection --------------------------------------------------------------------------


_WS_ENDED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)


class _WsSocket:
    """aiohttp's WebSocketResponse as the byte pipe YamuxConnection wants (plus faults)."""

    def __init__(self, ws: web.WebSocketResponse, ctl: RpcControl, rec: RpcRecord) -> None:
        self.ws = ws
        self.ctl = ctl
        self.rec = rec
        self._split: asyncio.Future[None] | None = None

    async def send(self, message: bytes, /) -> None:
        if self.ctl.blackhole:
            return
        if self.ctl.split_bytes:
            # One message per byte, sent by a task of its own chained after the previous one: a
            # caller cancelled halfway still sends all of its message, in order (MessageSocket).
            self._split = asyncio.ensure_future(self._send_split(self._split, message))
            await asyncio.shield(self._split)
        else:
            await self.ws.send_bytes(message)

    async def _send_split(self, before: asyncio.Future[None] | None, message: bytes) -> None:
        if before is not None:
            with contextlib.suppress(Exception):
                await before
        for i in range(len(message)):
            await self.ws.send_bytes(message[i : i + 1])

    async def close(self) -> None:
        await self.ws.close()

    # An iterator object rather than an async generator: one layer less per message.
    def __aiter__(self) -> _WsSocket:
        return self

    async def __anext__(self) -> str | bytes:
        while True:
            msg = await self.ws.receive()
            if msg.type in _WS_ENDED:
                raise StopAsyncIteration
            if self.ctl.blackhole:
                continue
            if msg.type == WSMsgType.BINARY:
                return bytes(msg.data)
            if msg.type == WSMsgType.TEXT:
                self.rec.violations.append("text websocket message")
                return str(msg.data)
            raise StopAsyncIteration


class _ServerConn:
    def __init__(self, ds: DevServer, ctl: RpcControl, agent: DevAgent, ws: web.WebSocketResponse,
                 request: web.Request, number: int) -> None:
        self.ds = ds
        self.ctl = ctl
        self.agent = agent
        self.rec = record(agent)
        self.ws = ws
        self.request = request
        self.number = number
        self.service = _Service(ctl, agent, ds)
        self._tasks: set[asyncio.Task[None]] = set()
        # Streams are served from the reader's callback (no accept queue): the reply then goes
        # out with the stream's ACK in one websocket message.
        self.conn = YamuxConnection(_WsSocket(ws, ctl, self.rec), client=False, max_message=1 << 20,
                                    on_stream=self._on_stream)

    async def drop(self, *, abort: bool = False) -> None:
        if abort and self.request.transport is not None:
            self.request.transport.abort()
        await self.conn.close()

    async def serve(self) -> None:
        pinger = asyncio.create_task(self._ping_loop())
        try:
            await self.conn.closed
        finally:
            for t in (pinger, *self._tasks):
                t.cancel()
            for t in (pinger, *self._tasks):
                with contextlib.suppress(BaseException):
                    await t
            await self.conn.close()

    def _on_stream(self, stream: Stream) -> None:
        if stream.stream_id % 2 == 0:
            self.rec.violations.append(f"client opened even stream id {stream.stream_id}")
        task = asyncio.get_running_loop().create_task(self._serve_stream(stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ctl.ping_interval)
            if self.ctl.blackhole:
                continue
            try:
                await self.conn.ping(self.ctl.inactive_timeout)
            except TimeoutError:
                self.rec.violations.append("ping timeout")
                await self.conn.close()
                return
            except ConnectionClosedError:
                return
            self.rec.pings_ok += 1
            self.rec.last_connected_at = _now()

    async def _serve_stream(self, stream: Stream) -> None:
        ss = drpc.ServerStream(streaming=tailnet.STREAMING)
        raw = bytearray()
        name = ""
        try:
            while True:
                data = await stream.read()
                if not data:
                    break
                if self.ctl.capture:
                    raw += data
                events = ss.receive_data(data)
                for i, ev in enumerate(events):
                    if isinstance(ev, drpc.InvokeReceived):
                        name = ev.method.rsplit("/", 1)[-1]
                        if ss.streaming:  # the Tailnet service, on the same mux as coderd's
                            await self._serve_tailnet(stream, ss, ev.method, name, events[i + 1:])
                            return
                    elif isinstance(ev, drpc.RequestReceived):
                        await self._handle(ss, stream, ev, name)
        except drpc.DrpcProtocolError as e:
            self.rec.violations.append(f"dRPC protocol error on stream {stream.stream_id}: {e}")
            stream.reset()
            return
        except (ConnectionClosedError, StreamResetError):
            return
        finally:
            if self.ctl.capture:
                self.rec.streams_raw.append(bytes(raw))
        await stream.close()

    async def _serve_tailnet(self, stream: Stream, ss: drpc.ServerStream, method: str, name: str,
                             pending: list[drpc.ServerEvent]) -> None:
        """A Tailnet streaming call; the unknown/unimplemented knobs apply to it as to the Agent service."""
        call = CallRecord(name, self.number, stream.stream_id, time.monotonic())
        self.rec.calls.append(call)
        if name in self.ctl.unknown:
            code, text = 0, f'protocol error: unknown rpc: "{method}"'
        elif name in self.ctl.unimplemented:
            code, text = drpc.UNIMPLEMENTED, "Unimplemented"
        else:
            await tailnet.server(self.ds).serve_call(stream, ss, pending, tailnet.agent_identity(self.agent))
            return
        call.error = text
        ss.send_error(code, text)
        stream.write(ss.data_to_send())
        await stream.close()

    async def _handle(self, ss: drpc.ServerStream, stream: Stream, ev: drpc.RequestReceived, name: str) -> None:
        call = CallRecord(name, self.number, stream.stream_id, time.monotonic())
        self.rec.calls.append(call)
        rec = self.rec
        rec.in_flight[name] = rec.in_flight.get(name, 0) + 1
        rec.max_in_flight[name] = max(rec.max_in_flight.get(name, 0), rec.in_flight[name])
        try:
            reply = await self.service.call(ev.method, ev.request)
        except RpcFailure as e:
            call.error = e.text
            ss.reply_error(e.code, e.text)
        else:
            ss.reply(reply)
        finally:
            rec.in_flight[name] -= 1
        stream.write(ss.data_to_send())
        await self.ds.notify()


def _version_error(raw: str | None, max_minor: int) -> str | None:
    if raw is None:
        return None
    m = _VERSION.match(raw)
    if not m:
        return f"invalid version {raw!r}: must be of the form MAJOR.MINOR"
    major, minor = int(m.group(1)), int(m.group(2))
    if major != SERVER_MAJOR:
        return f"server is at version {SERVER_MAJOR}.{max_minor}, behind requested major version {raw}" \
            if major > SERVER_MAJOR else f"version {raw} is no longer supported"
    if minor > max_minor:
        return f"server is at version {SERVER_MAJOR}.{max_minor}, behind requested minor version {raw}"
    return None


def install(app: web.Application, ds: DevServer) -> None:
    from .app import agent_of, coder_error

    ctl = control(ds)

    async def rpc(request: web.Request) -> web.StreamResponse:
        agent = agent_of(request)
        rec = record(agent)
        problem = _version_error(request.query.get("version"), ctl.max_minor)
        if problem is not None:
            return coder_error(400, "Unknown or unsupported API version",
                               validations=[{"field": "version", "detail": problem}])
        origin = request.headers.get("Origin")
        if origin and urlsplit(origin).netloc.lower() != str(request.host or "").lower():
            return coder_error(403, f"request Origin {origin!r} is not authorized for Host {request.host!r}")
        rec.upgrades.append({"query": dict(request.query), "headers": dict(request.headers)})
        if "Sec-WebSocket-Protocol" in request.headers:
            rec.violations.append("client asked for a websocket subprotocol")
        ws = web.WebSocketResponse(max_msg_size=MAX_WS_MESSAGE, compress=False, autoping=True)
        await ws.prepare(request)
        rec.connections += 1
        now = _now()
        rec.connected = True
        rec.first_connected_at = rec.first_connected_at or now
        rec.last_connected_at = now
        conn = _ServerConn(ds, ctl, agent, ws, request, rec.connections)
        ctl.connections.append(conn)
        await ds.notify()
        try:
            await conn.serve()
        finally:
            ctl.connections.remove(conn)
            if not any(c.agent is agent for c in ctl.connections):
                rec.connected = False
                rec.disconnected_at = _now()
            with contextlib.suppress(Exception):
                await ds.notify()
        return ws

    app.router.add_get("/api/v2/workspaceagents/me/rpc", rpc)
    tailnet.install(app, ds)
