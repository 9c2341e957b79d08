"""What the agent RPC capability uses: one typed bundle the composition root fills in.

The agent session is the capability that touches most: the connection (settings, tokens,
redactor, control-plane state, SIGHUP), the session's life (the :class:`SessionOwner`), the
manifest it publishes, the log sink and app-status service whose transports it switches to
dRPC, the children's environment it fills from the manifest, the status keys it shows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..appstatus.transport import AppStatusTransport
    from ..childenv import ChildEnv
    from ..clock import Clock
    from ..coderapi.client import CoderClient, TokenProvider
    from ..config import Settings
    from ..connreports import ConnectionReports, SessionCounts
    from ..controlplane import ControlPlane
    from ..devcontainers.cliparse import UpResult
    from ..feed import Feed
    from ..log import Redactor
    from ..logsink import LogSink
    from ..manifest import Manifest
    from ..metrics import Metrics
    from ..procprio import ChildPriority
    from ..rpc.proto import agent_pb2
    from ..sessionowner import SessionOwner
    from ..status import StatusRegistry

__all__ = ["AgentParts", "AppStatusSwitch", "DevcontainerStarter", "NetworkRoutine", "TunnelStats"]


@dataclass(frozen=True)
class TunnelStats:
    """The tunnel's traffic over one UpdateStats interval (Go's connstats): IP packets and
    bytes each way, and the TCP connections open or opened in the interval."""

    connections: int = 0
    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0


class AppStatusSwitch(Protocol):
    """The app-status delivery service, whose transport the session switches to dRPC and back."""

    @property
    def transport(self) -> AppStatusTransport: ...

    def set_transport(self, transport: AppStatusTransport) -> None: ...


@runtime_checkable
class DevcontainerStarter(Protocol):
    """The devcontainers service, which brings the manifest's devcontainers up after the start
    scripts (Go's ``createDevcontainer``)."""

    async def wait_first_scan(self, timeout: float) -> None: ...

    async def scan(self) -> None: ...

    async def up(self, dc_id: str) -> UpResult: ...


class NetworkRoutine(Protocol):
    """The workspace's network (the tailnet capability), run beside the session's routines.

    ``serve`` runs once per agent RPC connection, after that connection's manifest: it returns at
    once when there is nothing to run (tailnet off, no DERP map), otherwise runs until the
    connection's streams end and then raises, so the connection is redialed (as every routine
    of Go's agent). ``close`` is the graceful stop (coordination ``disconnect{}``), called at
    shutdown while the connection is still up; a later ``serve`` starts over (reinit).
    """

    async def serve(self, rpc: object, manifest: agent_pb2.Manifest) -> None: ...

    async def close(self) -> None: ...

    def stats(self) -> TunnelStats | None:
        """The counters since the previous call (None: no tunnel)."""
        ...


@dataclass(frozen=True)
class AgentParts:
    settings: Settings
    clock: Clock
    client: CoderClient  # REST: coderd's version (buildinfo)
    tokens: TokenProvider
    redactor: Redactor
    controlplane: ControlPlane  # the session's connection is its source (transport "rpc")
    owner: SessionOwner  # whose session this is; gives each session a fresh lifecycle
    manifests: Feed[Manifest]  # the session publishes every manifest here
    sink: LogSink  # the log pipeline (its transport becomes dRPC while connected)
    status: StatusRegistry
    command_env: ChildEnv  # every command's environment; the session sets its manifest
    priority: ChildPriority
    wait_retry_now: Callable[[float], Awaitable[None]]  # a sleep that SIGHUP cuts short
    auth_refused: Callable[[str], None]  # credentials refused for auth_exit_after: the daemon exits (77)
    metrics: Metrics | None = None  # RPC round-trip histogram
    network: NetworkRoutine | None = None  # the tailnet, served on every connection
    devcontainers: DevcontainerStarter | None = None  # brings manifest devcontainers up
    app_status: AppStatusSwitch | None = None
    connections: ConnectionReports | None = None  # SSH / web-terminal sessions, sent as ReportConnection
    session_counts: SessionCounts | None = None  # open sessions by app, sent in UpdateStats
