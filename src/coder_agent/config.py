"""Settings: one table of names, three sources, one validated model.

Rules:

* Every setting has a flag, an environment variable and a TOML key (see :data:`SETTINGS`);
  names follow Coder's Go agent so templates can switch without edits.
* Precedence: flag > environment > file (``--config`` / ``CODER_AGENT_CONFIG``) > default.
* Validation errors name the setting and where its value came from, as one line
  (:class:`~coder_agent.errors.ConfigError`; the CLI exits 78).
* Secrets (tokens, header values) are pydantic ``SecretStr``; :func:`redacted_view` shows them as
  ``[REDACTED]``.
* The models are pydantic; the loader (not pydantic-settings) merges the sources because it
  must remember where each value came from for the error line.
* Lists that only make sense in a file (``[[scripts]]``, ``[[log_sources]]``) have no flag.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from .errors import REDACTED, ConfigError

__all__ = [
    "SETTINGS",
    "AuthMethod",
    "LogSourceConfig",
    "ScriptConfig",
    "Setting",
    "Settings",
    "default_api_address",
    "load_settings",
]

AuthMethod = Literal["token", "aws-instance-identity", "azure-instance-identity", "google-instance-identity"]


class ScriptConfig(BaseModel):
    """A script, named after codersdk.WorkspaceAgentScript's fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)  # CLI helpers never validate
    display_name: str = Field(min_length=1)
    script: str
    run_on_start: bool = True
    run_on_stop: bool = False
    start_blocks_login: bool = False
    timeout: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    cron: str = ""
    log_path: str = ""
    icon: str = ""


class LogSourceConfig(BaseModel):
    """A file to follow and ship under ``display_name``."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)  # CLI helpers never validate
    display_name: str = Field(min_length=1)
    path: str = Field(min_length=1)
    icon: str = ""


def _duration(v: Any) -> Any:
    return parse_duration(v) if isinstance(v, str) else v


Seconds = Annotated[float, Field(allow_inf_nan=False)]
Duration = Annotated[float, BeforeValidator(_duration), Field(allow_inf_nan=False)]  # "7d", "24h", "90m", "3600"

SUBSYSTEMS = ("envbox", "envbuilder", "exectrace")


def _subsystems(v: str) -> str:
    """As Go's ``coder agent``: each comma-separated name, trimmed and non-empty, must be known."""
    names = [n.strip() for n in v.split(",") if n.strip()]
    for n in names:
        if n not in SUBSYSTEMS:
            raise ValueError(f"invalid subsystem {n!r} (expected {', '.join(SUBSYSTEMS)})")
    return ",".join(names)


class Settings(BaseModel):
    """The effective configuration of ``coder-agent run``."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)  # CLI helpers never validate

    url: str
    auth: AuthMethod = "token"
    token: SecretStr | None = None
    token_file: Path | None = None
    agent_name: str | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    api_address: str = ""
    api_allow_remote: bool = False
    log_dir: Path
    state_dir: Path
    prometheus_address: str = "127.0.0.1:2112"
    devcontainers_enable: bool = True
    devcontainers_discovery: bool = True
    devcontainers_discovery_autostart: bool = False  # Go's default too
    tailnet_enable: bool = True
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    tls_ca_file: Path | None = None
    tls_insecure: bool = False
    aws_metadata_endpoint: str = "http://169.254.169.254"
    gce_metadata_host: str = "169.254.169.254"
    azure_metadata_url: str = "http://169.254.169.254"
    directory: str = ""
    ports_ignore: list[int] = Field(default_factory=list)
    shutdown_timeout: Seconds = Field(default=60.0, gt=0)
    scripts: list[ScriptConfig] = Field(default_factory=list)
    log_sources: list[LogSourceConfig] = Field(default_factory=list)
    # For tests of the watchdog only: stall the event loop this many seconds after start.
    debug_stall_loop: Seconds = Field(default=0.0, ge=0)
    devcontainers_cli: str = ""
    devcontainers_inotify: bool = True
    devcontainers_watch_limit: int = Field(default=4000, ge=1)
    devcontainers_poll_interval: Seconds = Field(default=30.0, gt=0)
    log_retention: Duration = Field(default=7 * 86400.0, gt=0)
    reinit_ping_interval: Seconds = Field(default=15.0, gt=0)
    request_timeout: Seconds = Field(default=30.0, gt=0)
    auth_exit_after: Duration = Field(default=0.0, ge=0)  # 0 = never

    # Withhold CODER_AGENT_TOKEN from scripts and metadata commands (the Go agent always sets it).
    no_token_in_env: bool = False
    # Where coder-script-data/ (CODER_SCRIPT_DATA_DIR, CODER_SCRIPT_BIN_DIR) lives; default: state_dir
    script_data_dir: Path | None = None
    # Go's `coder agent` flags, same meaning: a command printing key=value header lines; extra log
    # files (human, JSON, Stackdriver JSON); no PID 1 reaper; SFTP/scp refused by an SSH server.
    agent_header_command: str = ""
    log_human: Path | None = None
    log_json: Path | None = None
    log_stackdriver: Path | None = None
    no_reap: bool = False
    block_file_transfer: bool = False
    # seconds an unused reconnecting-PTY session (the web terminal) lives after its last detach
    reconnecting_pty_timeout: Seconds = Field(default=300.0, gt=0)
    # Go's --ssh-max-timeout: SSH keepalive probes drop a client silent this long (0: never)
    ssh_max_timeout: Duration = Field(default=72 * 3600.0, ge=0)
    # CODER_AGENT_SUBSYSTEM: comma-separated envbox | envbuilder | exectrace, reported in UpdateStartup
    subsystem: Annotated[str, AfterValidator(_subsystems)] = ""

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("CODER_AGENT_URL must be set")
        if not (v.startswith("http://") or v.startswith("https://")):
            raise ValueError(f"must start with http:// or https://, got {v!r}")
        return v.rstrip("/")

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, v: Any) -> Any:
        return v.lower().replace("warn", "warning").replace("warninging", "warning") if isinstance(v, str) else v

    @field_validator("ports_ignore")
    @classmethod
    def _ports(cls, v: list[int]) -> list[int]:
        for p in v:
            if not 0 < p < 65536:
                raise ValueError(f"port {p} out of range 1-65535")
        return v

    def secret_values(self) -> list[str]:
        """Every secret string in this config, for the log redactor."""
        out = [h.get_secret_value() for h in self.headers.values()]
        if self.token is not None:
            out.append(self.token.get_secret_value())
        return [s for s in out if s]


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``"7d"``, ``"24h"``, ``"90m"``, ``"30s"`` or ``"3600"``; ValueError otherwise."""
    m = _DURATION.match(text.lower())
    if not m:
        raise ValueError(f"{text!r} is not a duration like 7d, 24h, 90m or 3600")
    return float(m[1]) * _UNIT[m[2] or "s"]


@dataclass(frozen=True)
class Setting:
    """One row of the settings table."""

    field: str
    flag: str | None
    env: str | None
    key: str | None
    kind: Literal["str", "bool", "path", "float", "list", "map", "ports", "table"] = "str"
    secret: bool = False
    help: str = ""


SETTINGS: tuple[Setting, ...] = (
    Setting("url", "--agent-url", "CODER_AGENT_URL", "url", help="base URL of coderd (required)"),
    Setting("auth", "--auth", "CODER_AGENT_AUTH", "auth",
            help="token | aws-instance-identity | azure-instance-identity | google-instance-identity"),
    Setting("token", "--agent-token", "CODER_AGENT_TOKEN", "token", secret=True, help="agent token"),
    Setting("token_file", "--agent-token-file", "CODER_AGENT_TOKEN_FILE", "token_file", "path",
            help="file holding the agent token (re-read on every reconnect)"),
    Setting("agent_name", "--agent-name", "CODER_AGENT_NAME", "agent_name",
            help="agent name for instance identity when several agents share an instance"),
    Setting("headers", "--agent-header", "CODER_AGENT_HEADER", "headers", "map", secret=True,
            help="extra header key=value sent on every request (repeatable)"),
    Setting("api_address", "--api-address", "CODER_AGENT_API_ADDRESS", "api.address",
            help="local API: unix:PATH or HOST:PORT"),
    Setting("api_allow_remote", "--api-allow-remote", "CODER_AGENT_API_ALLOW_REMOTE", "api.allow_remote", "bool",
            help="allow the local API on a non-loopback TCP address"),
    Setting("log_dir", "--log-dir", "CODER_AGENT_LOG_DIR", "log_dir", "path",
            help="the daemon's log and full local copies of every log source"),
    Setting("state_dir", "--state-dir", "CODER_AGENT_STATE_DIR", "state_dir", "path",
            help="small durable state (atomic writes)"),
    Setting("prometheus_address", "--prometheus-address", "CODER_AGENT_PROMETHEUS_ADDRESS", "prometheus_address",
            help="Prometheus metrics HOST:PORT; empty disables"),
    Setting("devcontainers_enable", "--devcontainers-enable", "CODER_AGENT_DEVCONTAINERS_ENABLE",
            "devcontainers.enable", "bool", help="serve containers and devcontainers"),
    Setting("devcontainers_discovery", "--devcontainers-project-discovery-enable",
            "CODER_AGENT_DEVCONTAINERS_PROJECT_DISCOVERY_ENABLE", "devcontainers.discovery", "bool",
            help="discover devcontainer.json files in git projects"),
    Setting("devcontainers_discovery_autostart", "--devcontainers-discovery-autostart-enable",
            "CODER_AGENT_DEVCONTAINERS_DISCOVERY_AUTOSTART_ENABLE", "devcontainers.discovery_autostart", "bool",
            help="bring up discovered projects whose devcontainer.json sets customizations.coder.autoStart"),
    Setting("tailnet_enable", "--tailnet-enable", "CODER_AGENT_TAILNET_ENABLE", "tailnet.enable", "bool",
            help="join Coder's tailnet when the manifest carries a DERP map (SSH, apps, ports)"),
    Setting("log_format", "--log-format", "CODER_AGENT_LOG_FORMAT", "log_format", help="console | json"),
    Setting("log_level", "--log-level", "CODER_AGENT_LOG_LEVEL", "log_level", help="debug | info | warn | error"),
    Setting("tls_ca_file", "--tls-ca-file", "CODER_AGENT_TLS_CA_FILE", "tls.ca_file", "path",
            help="CA bundle to verify coderd's certificate"),
    Setting("tls_insecure", "--tls-insecure", "CODER_AGENT_TLS_INSECURE", "tls.insecure", "bool",
            help="do not verify coderd's certificate (never in production)"),
    Setting("aws_metadata_endpoint", "--aws-metadata-endpoint", "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            "aws.metadata_endpoint", help="AWS IMDS base URL"),
    Setting("gce_metadata_host", "--gce-metadata-host", "GCE_METADATA_HOST", "gcp.metadata_host",
            help="Google metadata HOST[:PORT]"),
    Setting("azure_metadata_url", "--azure-metadata-url", "CODER_AGENT_AZURE_METADATA_URL",
            "azure.metadata_url", help="Azure IMDS base URL"),
    Setting("directory", "--directory", "CODER_AGENT_DIRECTORY", "directory",
            help="working directory for scripts (default: the manifest's, else $HOME)"),
    Setting("ports_ignore", "--ports-ignore", "CODER_AGENT_PORTS_IGNORE", "ports.ignore", "ports",
            help="ports never reported as listening (comma-separated)"),
    Setting("shutdown_timeout", "--shutdown-timeout", "CODER_AGENT_SHUTDOWN_TIMEOUT", "shutdown_timeout",
            "float", help="seconds for stop scripts and the final flush"),
    Setting("debug_stall_loop", "--debug-stall-loop", "CODER_AGENT_DEBUG_STALL_LOOP", "debug.stall_loop",
            "float", help="TESTS ONLY: block the event loop this many seconds after start"),
    Setting("scripts", None, None, "scripts", "table"),
    Setting("log_sources", None, None, "log_sources", "table"),
    Setting("devcontainers_cli", "--devcontainers-cli", "CODER_AGENT_DEVCONTAINERS_CLI", "devcontainers.cli",
            help="the Dev Containers CLI (path or name; default: devcontainer on PATH)"),
    Setting("devcontainers_inotify", "--devcontainers-inotify", "CODER_AGENT_DEVCONTAINERS_INOTIFY",
            "devcontainers.inotify", "bool",
            help="follow devcontainer.json files and project discovery through inotify (else: poll)"),
    Setting("devcontainers_watch_limit", "--devcontainers-watch-limit", "CODER_AGENT_DEVCONTAINERS_WATCH_LIMIT",
            "devcontainers.watch_limit",
            help="at most this many directories watched through inotify; past it, poll (default 4000)"),
    Setting("devcontainers_poll_interval", "--devcontainers-poll-interval",
            "CODER_AGENT_DEVCONTAINERS_POLL_INTERVAL", "devcontainers.poll_interval", "float",
            help="seconds between discovery and config polls where inotify is off or exhausted (default 30)"),
    Setting("log_retention", "--log-retention", "CODER_AGENT_LOG_RETENTION", "log_retention",
            help="keep rotated local logs this long (e.g. 7d, 24h; within 256 MiB per file set; default 7d)"),
    Setting("reinit_ping_interval", "--reinit-ping-interval", "CODER_AGENT_REINIT_PING_INTERVAL",
            "reinit.ping_interval", "float",
            help="coderd's keep-alive interval on the reinit stream; 3 missed = dropped (seconds)"),
    Setting("request_timeout", "--request-timeout", "CODER_AGENT_REQUEST_TIMEOUT", "request_timeout", "float",
            help="seconds before a request to coderd without a complete answer is abandoned (and retried)"),
    Setting("auth_exit_after", "--auth-exit-after", "CODER_AGENT_AUTH_EXIT_AFTER", "auth_exit_after",
            help="exit with code 77 once coderd has refused the agent's credentials this long without a "
                 "break (e.g. 15m), so a supervisor restarts it with fresh ones; default 0: never"),
    Setting("no_token_in_env", "--no-token-in-env", "CODER_AGENT_NO_TOKEN_IN_ENV", "no_token_in_env", "bool",
            help="do not give scripts and metadata commands CODER_AGENT_TOKEN (the coder CLI in the "
                 "workspace then lacks it)"),
    Setting("script_data_dir", "--script-data-dir", "CODER_AGENT_SCRIPT_DATA_DIR", "script_data_dir", "path",
            help="where coder-script-data/ (CODER_SCRIPT_DATA_DIR, CODER_SCRIPT_BIN_DIR) lives; default: state_dir"),
    Setting("agent_header_command", "--agent-header-command", "CODER_AGENT_HEADER_COMMAND", "header_command",
            help="a command (run with sh -c at start) whose key=value output lines are headers for every request"),
    Setting("log_human", "--log-human", "CODER_AGENT_LOGGING_HUMAN", "logging.human", "path",
            help="also write the daemon's log, human-readable, to this file"),
    Setting("log_json", "--log-json", "CODER_AGENT_LOGGING_JSON", "logging.json", "path",
            help="also write the daemon's log as JSON lines to this file"),
    Setting("log_stackdriver", "--log-stackdriver", "CODER_AGENT_LOGGING_STACKDRIVER", "logging.stackdriver", "path",
            help="also write the daemon's log as Google Cloud Logging (Stackdriver) JSON to this file"),
    Setting("no_reap", "--no-reap", "CODER_AGENT_NO_REAP", "no_reap", "bool",
            help="as PID 1, do not start the process reaper (run the daemon in this process)"),
    Setting("block_file_transfer", "--block-file-transfer", "CODER_AGENT_BLOCK_FILE_TRANSFER", "block_file_transfer",
            "bool", help="refuse file transfers (SFTP, scp, rsync) over SSH, as Go's agent"),
    Setting("reconnecting_pty_timeout", "--reconnecting-pty-timeout", "CODER_AGENT_RECONNECTING_PTY_TIMEOUT",
            "reconnecting_pty_timeout", "float",
            help="seconds a web-terminal session outlives its last connection (default 300)"),
    Setting("ssh_max_timeout", "--ssh-max-timeout", "CODER_AGENT_SSH_MAX_TIMEOUT", "ssh_max_timeout",
            help="drop an SSH client silent this long (keepalives; e.g. 60s, 72h; 0: never; default 72h)"),
    Setting("subsystem", None, "CODER_AGENT_SUBSYSTEM", "subsystem",
            help="comma-separated envbox | envbuilder | exectrace, reported to coderd"),
)
_BY_FIELD = {s.field: s for s in SETTINGS}


def _runtime_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/run/coder-agent")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "coder-agent"
    return Path(f"/tmp/coder-agent-{os.geteuid()}")  # noqa: S108 - per-user, created 0700


def default_api_address(env: Mapping[str, str] | None = None) -> str:
    """Where the local API listens unless told otherwise; every CLI subcommand uses this too."""
    env = os.environ if env is None else env
    explicit = env.get("CODER_AGENT_API_ADDRESS", "").strip()
    if explicit:
        return explicit
    return f"unix:{_runtime_dir() / 'api.sock'}"


SYSTEM_SOCKET = Path("/run/coder-agent/api.sock")


def client_api_address(env: Mapping[str, str] | None = None) -> str:
    """Where CLI subcommands look for the daemon: as :func:`default_api_address`, except that a
    user whose own socket does not exist finds the system service's (systemd unit, container)."""
    env = os.environ if env is None else env
    address = default_api_address(env)
    if env.get("CODER_AGENT_API_ADDRESS", "").strip() or not address.startswith("unix:"):
        return address
    if not Path(address[5:]).exists() and SYSTEM_SOCKET.exists():
        return f"unix:{SYSTEM_SOCKET}"
    return address


def _default_dirs() -> tuple[Path, Path]:
    if os.geteuid() == 0:
        return Path("/var/log/coder-agent"), Path("/var/lib/coder-agent")
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    state = Path(state_home) / "coder-agent"
    return state / "logs", state


def _toml_get(doc: Mapping[str, Any], dotted: str) -> Any:
    cur: Any = doc
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


_MISSING: Any = object()


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})  # an empty variable or flag means false


def _parse_bool(s: str) -> bool:
    v = s.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {s!r}")


def _parse_map(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError("expected key=value")
        out[key.strip()] = value
    return out


def _from_text(s: Setting, raw: Any) -> Any:
    """Convert a flag or env value (text, or a list for repeatable flags) into the model's shape."""
    if s.kind == "bool":
        return raw if isinstance(raw, bool) else _parse_bool(str(raw))
    if s.kind == "map":
        items = raw if isinstance(raw, list) else [p for p in str(raw).replace("\n", ",").split(",") if p.strip()]
        return _parse_map(items)
    if s.kind == "ports":
        items = raw if isinstance(raw, list) else str(raw).split(",")
        try:
            return [int(str(p).strip()) for p in items if str(p).strip()]
        except ValueError:
            raise ValueError(f"expected comma-separated port numbers, got {raw!r}") from None
    return raw


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> Settings:
    """Merge the three sources and validate. Raises ConfigError naming the setting and its origin.

    ``flags`` maps field names to values given on the command line (None = not given).
    ``config_file`` defaults to ``CODER_AGENT_CONFIG`` from ``env``.
    """
    flags = flags or {}
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    origin: dict[str, str] = {}

    path = config_file or env.get("CODER_AGENT_CONFIG") or None
    if path:
        try:
            doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError("--config", f"cannot read {path}: {e.strerror or e}", "CODER_AGENT_CONFIG") from None
        except UnicodeDecodeError:
            raise ConfigError("--config", f"{path} is not UTF-8 text") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError("--config", f"{path} is not valid TOML: {e}") from None
        known = {s.key.split(".")[0] for s in SETTINGS if s.key}
        for top in doc:
            if top not in known:
                raise ConfigError(top, "unknown key", f"file {path}")
        for s in SETTINGS:
            if s.key is None:
                continue
            v = _toml_get(doc, s.key)
            if v is _MISSING:
                continue
            if s.kind == "map" and isinstance(v, list):
                try:
                    v = _parse_map([str(i) for i in v])
                except ValueError as e:
                    raise ConfigError(s.key, str(e), f"file {path}") from None
            raw[s.field] = v
            origin[s.field] = f"file {path}, key {s.key}"

    for s in SETTINGS:
        if s.env is None:
            continue
        v = env.get(s.env)
        if v is None or (v == "" and s.kind != "str"):
            continue
        if v == "" and s.field in ("token", "token_file", "agent_name"):
            continue  # the Go agent treats an empty variable as unset
        try:
            raw[s.field] = _from_text(s, v)
        except ValueError as e:
            raise ConfigError(s.env, str(e), "environment") from None
        origin[s.field] = f"environment {s.env}"

    for s in SETTINGS:
        v = flags.get(s.field)
        if v is None or s.flag is None:
            continue
        try:
            raw[s.field] = _from_text(s, v)
        except ValueError as e:
            raise ConfigError(s.flag, str(e), "command line") from None
        origin[s.field] = f"flag {s.flag}"

    log_dir, state_dir = _default_dirs()
    raw.setdefault("log_dir", log_dir)
    raw.setdefault("state_dir", state_dir)
    if not raw.get("api_address"):
        raw["api_address"] = default_api_address({})
    if "url" not in raw:
        raise ConfigError("CODER_AGENT_URL", "must be set (flag --agent-url, or key url in the config file)")

    try:
        settings = Settings.model_validate(raw)
    except ValidationError as e:
        err = e.errors(include_url=False, include_input=False)[0]
        loc = [str(p) for p in err["loc"]]
        field = loc[0] if loc else "?"
        row = _BY_FIELD.get(field)
        name = (row.env or row.key or field) if row else field
        if len(loc) > 1:
            name = f"{row.key if row and row.key else field}.{'.'.join(loc[1:])}"
        raise ConfigError(name, error_text(err, secret=bool(row and row.secret)), origin.get(field)) from None

    _check_auth(settings, origin)
    _check_address(settings, origin)
    if settings.agent_header_command.strip():
        extra = run_header_command(settings.agent_header_command, origin.get("agent_header_command"))
        settings = settings.model_copy(update={"headers": {**{k: SecretStr(v) for k, v in extra.items()},
                                                           **settings.headers}})
    return settings


_PLAIN = {"missing": "required", "extra_forbidden": "unknown key", "finite_number": "expected a finite number"}


def error_text(err: Mapping[str, Any], *, secret: bool = False) -> str:
    """One pydantic error as one line that never echoes the value: pydantic's own words (our
    validators' messages without the ``Value error,`` prefix), plainer for the common cases."""
    msg = _PLAIN.get(err["type"]) or str(err["msg"]).removeprefix("Value error, ")
    if secret:
        msg = msg.split(",")[0]  # a validator may quote the input; a secret's never is
    return " ".join(msg.split())


def run_header_command(command: str, origin: str | None = None, timeout: float = 30.0) -> dict[str, str]:
    """Run ``sh -c command`` (as Go's ``--header-command``) and read ``key=value`` lines from its
    output. ConfigError naming CODER_AGENT_HEADER_COMMAND when it fails or prints anything else."""
    import subprocess

    name = "CODER_AGENT_HEADER_COMMAND"
    try:
        proc = subprocess.run(["sh", "-c", command], stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfigError(name, f"could not run it: {e}", origin) from None
    if proc.returncode != 0:
        raise ConfigError(name, f"exited with status {proc.returncode}", origin)
    try:
        return _parse_map([ln for ln in proc.stdout.decode().splitlines() if ln.strip()])
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(name, "its output must be key=value lines", origin) from None


def _check_auth(s: Settings, origin: Mapping[str, str]) -> None:
    if s.auth != "token":
        return
    if s.token is not None and s.token.get_secret_value().strip():
        return
    if s.token_file is None:
        raise ConfigError(
            "CODER_AGENT_TOKEN", "CODER_AGENT_TOKEN or CODER_AGENT_TOKEN_FILE must be set for token auth"
        )
    read_token_file(s.token_file, origin.get("token_file"))


def read_token_file(path: Path, origin: str | None = None) -> str:
    """The whitespace-trimmed token in ``path``; ConfigError when unreadable or empty."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError("CODER_AGENT_TOKEN_FILE", f"cannot read {path}: {e.strerror or e}", origin) from None
    except UnicodeDecodeError:
        raise ConfigError("CODER_AGENT_TOKEN_FILE", f"{path} is not text", origin) from None
    if not token:
        raise ConfigError("CODER_AGENT_TOKEN_FILE", f"{path} is empty", origin)
    return token


_LOOPBACK = ("127.", "localhost", "[::1]", "::1")


def _check_address(s: Settings, origin: Mapping[str, str]) -> None:
    a = s.api_address
    if a.startswith("unix:"):
        if len(a) <= 5:
            raise ConfigError("CODER_AGENT_API_ADDRESS", "unix: needs a path", origin.get("api_address"))
        return
    host, sep, port = a.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(
            "CODER_AGENT_API_ADDRESS", f"expected unix:PATH or HOST:PORT, got {a!r}", origin.get("api_address")
        )
    if not host.startswith(_LOOPBACK) and not s.api_allow_remote:
        raise ConfigError(
            "CODER_AGENT_API_ADDRESS",
            f"{host or '0.0.0.0'} is not loopback; set CODER_AGENT_API_ALLOW_REMOTE=true to allow it",
            origin.get("api_address"),
        )


def redacted_view(s: Settings) -> dict[str, Any]:
    """The effective config as plain data with every secret replaced, for ``config check``."""
    data = s.model_dump(mode="json")
    if s.token is not None:
        data["token"] = REDACTED
    data["headers"] = {k: REDACTED for k in s.headers}
    return data
