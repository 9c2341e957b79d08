"""How every command the agent runs for the user is started: argv and environment, as Coder's Go
agent builds them (``agentssh.CreateCommand`` + ``agent.updateCommandEnv`` + ``agentscripts``).
Scripts and metadata commands use it; an SSH server would too.

Rules:

* **Shell**: the user's login shell from the passwd entry (not the daemon's ``$SHELL``); when the
  user has no entry, ``$SHELL``, else ``sh`` (Go's ``usershell.Get``). A passwd shell that refuses
  logins (``nologin``, ``false``) counts as none: Go would run it and fail every script.
* **argv** (:func:`command_argv`): ``[shell, "-c", script]``. A script whose text, leading
  whitespace aside, starts with ``#!`` is written (atomically, mode 0700) to a file in the given
  directory and executed directly, so its own interpreter runs it (``#!/usr/bin/env python3``).
* **Environment** (:func:`build_child_env`), later wins:

  1. the daemon's environment, then ``USER`` (the passwd name), ``SSH_CLIENT`` /
     ``SSH_CONNECTION`` (fixed placeholders, as Go: clients expect them);
  2. the agent's predefined variables, which the daemon's own environment does NOT override (Go
     keeps its value when both have one): ``CODER=true``, ``CODER_WORKSPACE_NAME``,
     ``CODER_WORKSPACE_AGENT_NAME``, ``CODER_WORKSPACE_OWNER_NAME``, ``CODER_WORKSPACE_ID``,
     ``CODER_AGENT_URL``, ``CODER_AGENT_TOKEN`` (the *current* session token, however it was
     obtained: flag, variable, token file, instance identity), ``CS_DISABLE_GETTING_STARTED_OVERRIDE``,
     ``VSCODE_PROXY_URI`` when the manifest has one;
  3. the manifest's ``environment_variables``, ``$VAR``-expanded against the daemon's environment
     (unknown → ""), then manifest secrets with an ``env_name`` (raw);
  4. agent-level variables (``GIT_ASKPASS``, ``GIT_SSH_COMMAND``, ``CODER_AGENT_API_ADDRESS``);
  5. ``PATH`` gets ``CODER_SCRIPT_BIN_DIR`` first (every command, metadata included);
  6. for scripts, ``CODER_SCRIPT_DATA_DIR`` (per log source) and ``CODER_SCRIPT_BIN_DIR``.

  With ``token_in_env`` false (``--no-token-in-env``) ``CODER_AGENT_TOKEN`` is left out, also
  when the daemon's own environment had one.
* Pure except :func:`login_user` (reads passwd) and :func:`command_argv` (writes the file).
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
from collections.abc import Callable, ItemsView, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ChildEnv", "LiveEnv", "LoginUser", "agent_variables", "build_child_env", "command_argv", "login_user",
           "script_data_root", "script_file_name"]

_VAR = re.compile(r"\$(?:\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_NO_LOGIN = ("nologin", "false")


@dataclass(frozen=True)
class LoginUser:
    name: str
    home: str
    shell: str


def login_user(env: Mapping[str, str] | None = None) -> LoginUser:
    """The user the daemon runs as, with the shell its commands run under (see the module rules)."""
    env = os.environ if env is None else env
    try:
        pw = pwd.getpwuid(os.getuid())
    except KeyError:  # a container's arbitrary uid without a passwd entry
        name = env.get("USER") or env.get("LOGNAME") or str(os.getuid())
        return LoginUser(name, env.get("HOME") or "/", env.get("SHELL") or "sh")
    shell = pw.pw_shell.strip()
    if not shell or os.path.basename(shell) in _NO_LOGIN:
        shell = env.get("SHELL") or "sh"
    return LoginUser(pw.pw_name, pw.pw_dir, shell)


def script_data_root(base: Path) -> Path:
    """``<base>/coder-script-data``: per-source data dirs and ``bin`` live here (Go's layout)."""
    return base / "coder-script-data"


def command_argv(script: str, shell: str, file_dir: Path, name: str) -> list[str]:
    """The argv that runs ``script``; a ``#!`` script is written to ``file_dir/name`` first.

    Raises OSError when that file cannot be written."""
    text = script.lstrip()
    if not text.startswith("#!"):
        return [shell, "-c", script]
    file_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = file_dir / name
    # A new inode each time: a cron run must not rewrite a file another run is executing (ETXTBSY).
    tmp = file_dir / f".{name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return [str(path)]


def script_file_name(key: str) -> str:
    """A stable file name for the script identified by ``key``."""
    return "script-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _expand(value: str, env: Mapping[str, str]) -> str:
    return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2) or "", ""), value)


def agent_variables(
    process_env: Mapping[str, str],
    *,
    manifest: Mapping[str, Any] | None = None,
    secrets: Sequence[Mapping[str, Any]] = (),
    agent_env: Mapping[str, str] | None = None,
    agent_url: str = "",
    token: str | None = None,
    token_in_env: bool = True,
) -> dict[str, str]:
    """Layers 2-4 of the module rules: what the agent sets on top of the daemon's environment."""
    m = manifest or {}
    out = {"CODER": "true", "CS_DISABLE_GETTING_STARTED_OVERRIDE": "true"}
    if manifest is not None:
        out.update({
            "CODER_WORKSPACE_NAME": str(m.get("workspace_name", "")),
            "CODER_WORKSPACE_AGENT_NAME": str(m.get("agent_name", "")),
            "CODER_WORKSPACE_OWNER_NAME": str(m.get("owner", "")),
            "CODER_WORKSPACE_ID": str(m.get("workspace_id", "")),
        })
        if m.get("vs_code_port_proxy_uri"):
            out["VSCODE_PROXY_URI"] = str(m["vs_code_port_proxy_uri"])
    if agent_url:
        out["CODER_AGENT_URL"] = agent_url
    if token and token_in_env:
        out["CODER_AGENT_TOKEN"] = token
    for k, v in dict(m.get("environment") or {}).items():
        out[str(k)] = _expand(str(v), process_env)
    for s in secrets:
        if s.get("env_name"):
            out[str(s["env_name"])] = bytes(s.get("value", b"")).decode("utf-8", "replace")
    out.update(agent_env or {})
    return out


def build_child_env(
    process_env: Mapping[str, str],
    *,
    user: LoginUser,
    bin_dir: Path,
    manifest: Mapping[str, Any] | None = None,
    secrets: Sequence[Mapping[str, Any]] = (),
    agent_env: Mapping[str, str] | None = None,
    agent_url: str = "",
    token: str | None = None,
    token_in_env: bool = True,
    script_data_dir: Path | None = None,
) -> dict[str, str]:
    """The environment of one command (pure; the order is the module's rules)."""
    env = dict(process_env)
    env["USER"] = user.name
    env["SSH_CLIENT"] = "0.0.0.0 0 0"
    env["SSH_CONNECTION"] = "0.0.0.0 0 0.0.0.0 0"
    if not token_in_env:
        env.pop("CODER_AGENT_TOKEN", None)
    env.update(agent_variables(process_env, manifest=manifest, secrets=secrets, agent_env=agent_env,
                               agent_url=agent_url, token=token, token_in_env=token_in_env))
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH') or process_env.get('PATH', '')}"
    if script_data_dir is not None:
        env["CODER_SCRIPT_DATA_DIR"] = str(script_data_dir)
        env["CODER_SCRIPT_BIN_DIR"] = str(bin_dir)
    return env


@dataclass
class ChildEnv:
    """The inputs of :func:`build_child_env` as they change over the agent's life.

    ``agent_env`` is the daemon's shared dict of agent-level variables (capabilities add to it);
    the agent session sets ``manifest``/``secrets`` when a manifest arrives; ``token`` returns the
    current session token without waiting (None before one was obtained)."""

    agent_env: dict[str, str]
    data_base: Path
    agent_url: str = ""
    token: Callable[[], str | None] = lambda: None
    token_in_env: bool = True
    manifest: Mapping[str, Any] | None = None
    secrets: list[Mapping[str, Any]] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return script_data_root(self.data_base)

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    def set_manifest(self, manifest: Mapping[str, Any], secrets: Sequence[Mapping[str, Any]]) -> None:
        self.manifest = manifest
        self.secrets = list(secrets)

    def build(self, *, script_data_dir: Path | None = None, process_env: Mapping[str, str] | None = None,
              user: LoginUser | None = None) -> dict[str, str]:
        """The environment for a command now (``script_data_dir`` for scripts)."""
        penv = os.environ if process_env is None else process_env
        return build_child_env(penv, user=user or login_user(penv), bin_dir=self.bin_dir, manifest=self.manifest,
                               secrets=self.secrets, agent_env=self.agent_env, agent_url=self.agent_url,
                               token=self.token(), token_in_env=self.token_in_env, script_data_dir=script_data_dir)

    def exported(self) -> dict[str, str]:
        """What the agent sets on top of the daemon's environment (``coder-agent env``)."""
        return agent_variables(os.environ, manifest=self.manifest, secrets=self.secrets, agent_env=self.agent_env,
                               agent_url=self.agent_url, token=self.token(), token_in_env=self.token_in_env)


class LiveEnv(Mapping[str, str]):
    """A read-only mapping recomputed on every use (e.g. ``LiveEnv(child_env.exported)`` for a part
    that wants the agent's variables as they are when it starts a command)."""

    def __init__(self, source: Callable[[], Mapping[str, str]]) -> None:
        self._source = source

    def __getitem__(self, key: str) -> str:
        return self._source()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self._source()))

    def __len__(self) -> int:
        return len(self._source())

    def items(self) -> ItemsView[str, str]:  # one computation, not one per key
        return dict(self._source()).items()
