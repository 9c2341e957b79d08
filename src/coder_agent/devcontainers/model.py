"""Pure conversions: engine inspect data → codersdk containers; sources + containers → devcontainers.

Rules:

* A container is reported as codersdk.WorkspaceAgentContainer: ``name`` without the leading
  slash, ``status`` text "running" / "exited successfully" / "exited with code N" (the Go
  agent's words; other engine states such as "created" or "paused" are reported by name),
  ``: <error>`` appended when the engine recorded one; ``ports`` from the published bindings
  (an IPv4 and IPv6 unspecified/loopback pair for one host port is one entry); ``volumes``
  source → destination.
* A container is a devcontainer's only when it carries ``devcontainer.local_folder``
  (``devcontainer.is_test_run=true`` ones are ignored). We never manage anything else.
* A devcontainer is identified by (workspace folder, config path); its id is the manifest's
  when the manifest defines it, else uuid5 of that pair — stable across container recreation
  and agent restarts.
* When several containers match one devcontainer, the running one wins, then the newest;
  the others are named in ``warnings``.
* ``dirty``: the config file's mtime is later than the container's creation.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import TypeAdapter

from .status import Event, Refused, Status, next_status, observation

__all__ = [
    "LABEL_CONFIG_FILE",
    "LABEL_LOCAL_FOLDER",
    "Container",
    "Devcontainer",
    "Runtime",
    "Source",
    "assemble",
    "container_from_inspect",
    "devcontainer_id",
    "filter_containers",
    "parse_docker_time",
    "parse_label_filters",
    "port_warnings",
    "safe_name",
]

LABEL_LOCAL_FOLDER = "devcontainer.local_folder"
LABEL_CONFIG_FILE = "devcontainer.config_file"
LABEL_IS_TEST_RUN = "devcontainer.is_test_run"
_NS = uuid.UUID("0b7d1a44-5f0e-4c62-9a0e-6d2f4e1f7c31")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


_TIME = TypeAdapter(dt.datetime)  # the reader the wire models use: RFC 3339, Go's nanoseconds cut to µs


def parse_docker_time(s: str | None) -> dt.datetime:
    """RFC 3339 with up to nanoseconds (the engine's format) → aware UTC datetime (µs precision);
    the epoch when missing or unreadable."""
    try:
        t = _TIME.validate_strings((s or "").strip())
        return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)
    except (ValueError, OverflowError):  # OverflowError: 0001-01-01 with a positive offset has no UTC time
        return _EPOCH


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Container:
    """One engine container, already in codersdk shape (``api``) plus what the logic needs."""

    id: str
    name: str
    created: dt.datetime
    running: bool
    labels: Mapping[str, str]
    api: Mapping[str, Any]  # codersdk.WorkspaceAgentContainer as JSON


def _status_text(state: Mapping[str, Any]) -> str:
    if state.get("Running"):
        text = "running"
    else:
        engine_status = str(state.get("Status") or "")
        code = int(state.get("ExitCode") or 0)
        if engine_status and engine_status not in ("exited", "dead"):
            text = engine_status  # created, paused, restarting, removing
        elif code == 0:
            text = "exited successfully"
        else:
            text = f"exited with code {code}"
    err = str(state.get("Error") or "")
    return f"{text}: {err}" if err else text


_UNSPECIFIED = {"", "0.0.0.0", "::", "127.0.0.1", "::1"}


def _ports(net: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, int, int]] = set()
    for spec, bindings in sorted(((net or {}).get("Ports") or {}).items()):
        port_s, _, proto = spec.partition("/")
        try:
            port = int(port_s)
        except ValueError:
            continue
        for b in bindings or []:
            try:
                host_port = int(b.get("HostPort") or 0)
            except (TypeError, ValueError):
                continue
            host_ip = str(b.get("HostIp") or "")
            key = (proto or "tcp", port, host_port)
            if host_ip in _UNSPECIFIED and key in seen:
                continue  # the IPv6 twin of an IPv4 binding
            seen.add(key)
            out.append({"network": proto or "tcp", "port": port, "host_port": host_port, "host_ip": host_ip})
    return out


def container_from_inspect(d: Mapping[str, Any]) -> Container:
    """Build a :class:`Container` from ``docker inspect`` JSON (one element)."""
    cfg = d.get("Config") or {}
    state = d.get("State") or {}
    labels = {str(k): str(v) for k, v in (cfg.get("Labels") or {}).items()}
    created = parse_docker_time(d.get("Created"))
    name = str(d.get("Name") or "").lstrip("/")
    volumes = {str(m.get("Source") or m.get("Name") or ""): str(m.get("Destination") or "")
               for m in d.get("Mounts") or []}
    api: dict[str, Any] = {
        "created_at": _iso(created),
        "id": str(d.get("Id") or ""),
        "name": name,
        "image": str(cfg.get("Image") or d.get("Image") or ""),
        "labels": labels,
        "running": bool(state.get("Running")),
        "ports": _ports(d.get("NetworkSettings")),
        "status": _status_text(state),
        "volumes": volumes,
    }
    return Container(id=str(api["id"]), name=name, created=created, running=bool(api["running"]), labels=labels,
                     api=api)


def port_warnings(containers: Iterable[Container]) -> list[str]:
    """One warning per host port that several containers publish."""
    owners: dict[tuple[str, int], list[str]] = {}
    for c in containers:
        for p in c.api["ports"]:
            if p["host_port"]:
                owners.setdefault((p["network"], p["host_port"]), []).append(c.name)
    return [f"host port {port}/{net} is mapped to several containers: {', '.join(sorted(set(names)))}"
            for (net, port), names in sorted(owners.items()) if len(set(names)) > 1]


class LabelFilterError(ValueError):
    pass


def parse_label_filters(values: Sequence[str]) -> dict[str, str]:
    """``label=key=value`` query values → {key: value}; :class:`LabelFilterError` when malformed."""
    out: dict[str, str] = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key.strip():
            raise LabelFilterError(f"Invalid label filter {v!r}: expected key=value.")
        out[key] = value
    return out


def filter_containers(containers: Iterable[Container], labels: Mapping[str, str]) -> list[Container]:
    return [c for c in containers if all(c.labels.get(k) == v for k, v in labels.items())]


# devcontainers -----------------------------------------------------------------------------


def devcontainer_id(workspace_folder: str, config_path: str) -> str:
    return str(uuid.uuid5(_NS, f"{workspace_folder}\n{config_path}"))


def default_config_path(folder: str, exists: Callable[[str], bool]) -> str:
    """The config a bare ``devcontainer up --workspace-folder`` would use."""
    for rel in (".devcontainer/devcontainer.json", ".devcontainer.json"):
        p = f"{folder.rstrip('/')}/{rel}"
        if exists(p):
            return p
    return f"{folder.rstrip('/')}/.devcontainer/devcontainer.json"


def safe_name(text: str) -> str:
    """Lower-case, non-alphanumerics to '-', collapsed, trimmed, at most 64 characters."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:64].strip("-")


@dataclass(frozen=True)
class Source:
    """A devcontainer definition: from the manifest, from discovery, or from container labels."""

    workspace_folder: str
    config_path: str
    origin: str  # manifest | discovery | label
    id: str = ""
    name: str = ""

    def key(self) -> tuple[str, str]:
        return (self.workspace_folder.rstrip("/") or "/", self.config_path)


@dataclass
class Runtime:
    """What the manager remembers about a devcontainer between scans."""

    status: Status = Status.STOPPED
    error: str = ""
    failed_at: dt.datetime | None = None
    hide_container: bool = False  # while starting: the old container is on its way out
    seen_container: str = ""

    def apply(self, event: Event) -> Status:
        self.status = next_status(self.status, event)
        return self.status


@dataclass(frozen=True)
class Devcontainer:
    id: str
    name: str
    workspace_folder: str
    config_path: str
    origin: str
    status: Status
    dirty: bool
    container: Container | None
    error: str = ""
    others: tuple[str, ...] = field(default=())

    def api(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "workspace_folder": self.workspace_folder,
            "config_path": self.config_path,
            "status": self.status.value,
            "dirty": self.dirty,
        }
        if self.container is not None:
            out["container"] = dict(self.container.api)
        if self.error:
            out["error"] = self.error
        return out


def _matches(src: Source, c: Container) -> bool:
    if c.labels.get(LABEL_LOCAL_FOLDER, "").rstrip("/") != src.workspace_folder.rstrip("/"):
        return False
    cfg = c.labels.get(LABEL_CONFIG_FILE, "")
    return not cfg or not src.config_path or cfg == src.config_path


def _names(sources: Sequence[Source]) -> dict[tuple[str, str], str]:
    """Names from the workspace folder, extended with parent directories on conflicts."""
    out: dict[tuple[str, str], str] = {}
    taken: set[str] = {s.name for s in sources if s.name}
    for s in sources:
        if s.name:
            out[s.key()] = s.name
    for s in sources:
        if s.name:
            continue
        parts = [p for p in s.workspace_folder.split("/") if p]
        name = ""
        for depth in range(1, min(len(parts), 5) + 1):
            cand = safe_name("-".join(parts[-depth:]))
            if cand and cand not in taken:
                name = cand
                break
        if not name:
            base = safe_name(parts[-1] if parts else "devcontainer") or "devcontainer"
            n = 2
            while f"{base}-{n}" in taken:
                n += 1
            name = f"{base}-{n}"
        taken.add(name)
        out[s.key()] = name
    return out


def assemble(
    containers: Sequence[Container],
    sources: Sequence[Source],
    runtime: dict[str, Runtime],
    config_mtimes: Mapping[str, float | None],
    *,
    exists: Callable[[str], bool],
    ids: Mapping[tuple[str, str], str] | None = None,
) -> tuple[list[Devcontainer], list[str]]:
    """Merge definitions and containers into devcontainers; update ``runtime`` in place.

    ``sources`` come in priority order (manifest, then discovery); containers carrying the
    labels add the devcontainers nobody defined. ``ids`` are remembered ids by key. Returns the
    devcontainers sorted by workspace folder and the warnings about duplicate containers.
    """
    warnings: list[str] = []
    labelled = [c for c in containers
                if c.labels.get(LABEL_LOCAL_FOLDER) and c.labels.get(LABEL_IS_TEST_RUN) != "true"]
    merged: dict[tuple[str, str], Source] = {}
    for s in sources:
        folder = s.workspace_folder.rstrip("/") or "/"
        cfg = s.config_path or default_config_path(folder, exists)
        if cfg and not cfg.startswith("/"):
            cfg = f"{folder}/{cfg}"
        s = replace(s, workspace_folder=folder, config_path=cfg)
        merged.setdefault(s.key(), s)
    for c in sorted(labelled, key=lambda c: c.created):
        if any(_matches(s, c) for s in merged.values()):
            continue
        folder = c.labels[LABEL_LOCAL_FOLDER].rstrip("/") or "/"
        cfg = c.labels.get(LABEL_CONFIG_FILE) or default_config_path(folder, exists)
        s = Source(folder, cfg, "label")
        merged.setdefault(s.key(), s)

    srcs = list(merged.values())
    names = _names(srcs)
    out: list[Devcontainer] = []
    live: set[str] = set()
    for s in srcs:
        dc_id = s.id or (ids or {}).get(s.key()) or devcontainer_id(*s.key())
        live.add(dc_id)
        rt = runtime.setdefault(dc_id, Runtime())
        matching = sorted((c for c in labelled if _matches(s, c)),
                          key=lambda c: (c.running, c.created), reverse=True)
        best = matching[0] if matching else None
        others = tuple(c.id for c in matching[1:])
        if others:
            warnings.append(
                f"devcontainer {names[s.key()]} ({s.workspace_folder}): using container "
                f"{best.name if best else '?'}; ignoring {len(others)} other container(s) with the same labels: "
                + ", ".join(c.name for c in matching[1:]))
        newer = best is not None and rt.failed_at is not None and best.created > rt.failed_at
        try:
            rt.apply(observation(best is not None and best.running, newer))
        except Refused:
            pass  # REMOVED entries are dropped below
        if rt.status is not Status.ERROR and rt.failed_at is not None and newer:
            rt.failed_at = None
            rt.error = ""
        shown = None if rt.hide_container else best
        if best is not None:
            rt.seen_container = best.id
        mtime = config_mtimes.get(s.config_path)
        dirty = shown is not None and mtime is not None and mtime > shown.created.timestamp()
        out.append(Devcontainer(
            id=dc_id, name=names[s.key()], workspace_folder=s.workspace_folder, config_path=s.config_path,
            origin=s.origin, status=rt.status, dirty=dirty, container=shown, error=rt.error, others=others,
        ))
    # forget settled entries that no longer exist; keep jobs in flight
    for dc_id in [k for k, v in runtime.items() if k not in live and v.status not in
                  (Status.STARTING, Status.STOPPING, Status.DELETING)]:
        del runtime[dc_id]
    out.sort(key=lambda d: (d.workspace_folder, d.config_path))
    return out, warnings
