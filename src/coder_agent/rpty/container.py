"""A reconnecting PTY inside a dev container: the ``docker`` CLI, as Go's
``agentcontainers.EnvInfo`` + ``WrapDockerExecPTY``.

Rules:

* The user is ``ContainerUser``, else the container's default user (``docker exec -i <c> whoami``).
* Its shell is the one in the container's ``/etc/passwd`` (``docker exec -i --user <u> <c> cat
  /etc/passwd``); where the user has no entry (an arbitrary uid; Go refuses then, a shell is more
  useful) or a shell that refuses logins (``nologin``, ``false``: the rule of
  :func:`coder_agent.childenv.login_user`), ``/bin/sh``.
* The session runs ``docker exec --interactive --tty [--user <u>] <c> <shell> -l`` (no command)
  or ``… <shell> -c <command>`` inside the agent's PTY: the CLI relays the terminal and its size.
* A probe that fails (no ``docker``, no such container, not running) raises :class:`ContainerError`
  with the CLI's one-line reason; the connection ends with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping

__all__ = ["ContainerError", "docker_exec_argv", "passwd_shell", "probe_shell"]

FALLBACK_SHELL = "/bin/sh"
_NO_LOGIN = ("nologin", "false")


class ContainerError(RuntimeError):
    """The container cannot run the session; ``str()`` says why."""


def docker_exec_argv(container: str, user: str, shell: str, command: str) -> list[str]:
    argv = ["docker", "exec", "--interactive", "--tty"]
    if user:
        argv += ["--user", user]
    argv += [container, shell]
    argv += ["-c", command] if command else ["-l"]
    return argv


def passwd_shell(passwd: str, user: str) -> str | None:
    """The login shell of ``user`` in a passwd file's text (the last matching line, as Go); None
    when there is none or it refuses logins."""
    shell = None
    for line in passwd.splitlines():
        fields = line.strip().split(":")
        if len(fields) >= 7 and fields[0] == user:
            shell = fields[6].strip() or None
    if shell is None or os.path.basename(shell) in _NO_LOGIN:
        return None
    return shell


async def _docker(argv: list[str], env: Mapping[str, str], timeout: float) -> str:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=dict(env), start_new_session=True)
    except OSError as e:
        raise ContainerError(f"cannot run docker: {e.strerror or e}") from None
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise ContainerError(f"`{' '.join(argv[:4])} …` timed out after {timeout:g}s") from None
    if proc.returncode != 0:
        reason = (err.decode(errors="replace").strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise ContainerError(f"`docker exec` failed: {reason[:300]}")
    return out.decode(errors="replace")


async def probe_shell(container: str, user: str, env: Mapping[str, str], *,
                      timeout: float = 30.0) -> tuple[str, str]:
    """``(user, shell)`` to run in ``container`` (see the module rules); raises ContainerError."""
    if not user:
        user = (await _docker(["docker", "exec", "--interactive", container, "whoami"], env, timeout)).strip()
        if not user:
            raise ContainerError("`whoami` in the container printed nothing")
    argv = ["docker", "exec", "--interactive", "--user", user, container, "cat", "/etc/passwd"]
    passwd = await _docker(argv, env, timeout)
    return user, passwd_shell(passwd, user) or FALLBACK_SHELL
