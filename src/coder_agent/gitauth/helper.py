"""The helper side: what ``coder-agent git-askpass`` and ``coder-agent gitssh`` do. Synchronous;
the daemon is reached through :class:`~coder_agent.localapi.client.LocalClient`.

Rules:

* git-askpass: parse the prompt, ask the daemon with ``match=URL``; print the answer on stdout
  (one line) and exit 0. No provider matches (404) → one warning line on stderr, exit 1, so git
  falls back to its normal behaviour (terminal prompt, credential helpers). Not linked → print
  the URL to open on stderr and ask again with ``listen`` until linked, the wait bound
  (:data:`DEFAULT_WAIT`, env ``CODER_AGENT_GIT_ASKPASS_TIMEOUT``) passes (exit 1), or Ctrl-C
  (exit 130). Transient errors while waiting back off 250 ms → 10 s, like the Go helper.
* gitssh: user identities first, the Coder key last (see :mod:`.sshargs`); the private key lives
  in a 0600 temp file only while ssh runs and is removed in ``finally`` — also when a signal
  arrives (SIGINT/SIGTERM/SIGHUP are forwarded to ssh, which then exits). ssh's exit status is
  ours; on 255 the public key and where to add it go to stderr. If the key cannot be fetched,
  ssh runs with the user's own identities and a warning says why.
* Nothing here prints or logs the private key; errors name the daemon address and what to do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

from ..localapi.client import LocalAPIUnavailable, LocalClient
from ..retry import Backoff, RetryPolicy
from .prompt import PromptError, answer, parse_prompt, unlinked_url
from .sshargs import failure_hint, identity_files, ssh_argv

__all__ = ["DEFAULT_WAIT", "HelperError", "get_json", "run_askpass", "run_gitssh", "unreachable_message"]

DEFAULT_WAIT = 600.0  # seconds git-askpass waits for the user to link a provider
WAIT_ENV = "CODER_AGENT_GIT_ASKPASS_TIMEOUT"
LISTEN_CHUNK = 50.0  # per listen request; the daemon caps its upstream long-poll at the same
LISTEN_POLICY = RetryPolicy(initial=0.25, cap=10.0, factor=2.0, jitter=0.1)


class HelperError(Exception):
    """A one-line explanation for stderr (the daemon is unreachable, refused us, or failed)."""


def unreachable_message(address: str, error: str, *, euid: int | None = None,
                        access: Callable[[Path, int], bool] = os.access) -> str:
    """Why the daemon cannot be reached at ``address``, with what to do about it.

    ``euid`` and ``access`` are the caller's identity and permission check (injectable because a
    test cannot always run Python as another user)."""
    if address.startswith("unix:"):
        path = Path(address[5:])
        try:
            st = path.stat()
        except FileNotFoundError:
            return (f"coder-agent is not running here: no socket at {path} "
                    "(set CODER_AGENT_API_ADDRESS if it listens elsewhere)")
        except PermissionError:
            return (f"cannot reach the coder-agent socket {path}: permission denied. The daemon runs "
                    "as another user; git credentials are served only to the daemon's own user")
        euid = os.geteuid() if euid is None else euid
        if euid != 0 and st.st_uid != euid and not access(path, os.R_OK | os.W_OK):
            return (f"the coder-agent socket {path} belongs to uid {st.st_uid} and you are uid {euid}: "
                    "git credentials are served only to the daemon's own user. Run git as that user, "
                    "or run coder-agent as yours")
    return error


def get_json(client: LocalClient, path: str, params: dict[str, str] | None = None,
         timeout: float | None = None) -> tuple[int, dict[str, Any]]:
    try:
        r = client.request("GET", path, params=params, timeout=timeout)
    except LocalAPIUnavailable as e:
        raise HelperError(unreachable_message(client.address, str(e))) from None
    try:
        body = r.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"message": f"HTTP {r.status_code} with a body that is not JSON"}
    if r.status_code == 403:
        raise HelperError(f"coder-agent refused: {describe(body)}")
    return r.status_code, body


def describe(body: dict[str, Any]) -> str:
    text = str(body.get("message") or "")
    if body.get("detail"):
        text += f" ({body['detail']})"
    return text


def wait_bound(env: dict[str, str] | os._Environ[str] | None = None) -> float:
    raw = (env if env is not None else os.environ).get(WAIT_ENV, "").strip()
    if not raw:
        return DEFAULT_WAIT
    try:
        v = float(raw)
    except ValueError:
        return DEFAULT_WAIT
    return v if v > 0 else DEFAULT_WAIT


# git-askpass ---------------------------------------------------------------------------

def run_askpass(prompt_text: str, client: LocalClient, *, wait: float, out: IO[str], err: IO[str],
                sleep: Callable[[float], None] = time.sleep,
                monotonic: Callable[[], float] = time.monotonic) -> int:
    """Answer one git prompt. Returns the exit status (0 answered, 1 not, 130 interrupted)."""
    try:
        prompt = parse_prompt(prompt_text)
    except PromptError as e:
        print(f"coder-agent git-askpass: {e}", file=err)
        return 1
    try:
        status, body = get_json(client, "/api/v0/external-auth", {"match": prompt.url})
        if status == 404:
            print("coder-agent: no Coder external auth provider matches "
                  f"{prompt.url}; git falls back to its default behaviour. {describe(body)}", file=err)
            return 1
        if status != 200:
            print(f"coder-agent git-askpass: cannot get Git credentials for {prompt.url}: "
                  f"{describe(body)}", file=err)
            return 1
        url = unlinked_url(body)
        if url is not None:
            linked = _wait_for_link(prompt.url, url, client, wait=wait, err=err, sleep=sleep, monotonic=monotonic)
            if linked is None:
                return 1
            body = linked
    except HelperError as e:
        print(f"coder-agent git-askpass: {e}", file=err)
        return 1
    except KeyboardInterrupt:
        print("\ncoder-agent: gave up waiting for Git authentication (interrupted).", file=err)
        return 130
    print(answer(prompt, body), file=out)
    out.flush()
    return 0


def _wait_for_link(match: str, url: str, client: LocalClient, *, wait: float, err: IO[str],
                   sleep: Callable[[float], None], monotonic: Callable[[], float]) -> dict[str, Any] | None:
    minutes = f"{wait / 60:.0f} min" if wait >= 60 else f"{wait:.0f} s"
    print(f"You are not authenticated with this Git provider in Coder yet.\n"
          f"Open the following URL to authenticate with Git:\n\n  {url}\n\n"
          f"Waiting up to {minutes} for you to finish (Ctrl-C to give up)...", file=err)
    err.flush()
    deadline = monotonic() + wait
    backoff = Backoff(LISTEN_POLICY)
    last_problem = ""
    while True:
        remaining = deadline - monotonic()
        if remaining <= 0:
            print(f"coder-agent: timed out after {minutes} waiting for Git authentication; "
                  f"git falls back to its default behaviour. Open {url} and retry the git command.", file=err)
            return None
        chunk = min(LISTEN_CHUNK, max(1.0, remaining))
        problem = ""
        try:
            status, body = get_json(client, "/api/v0/external-auth",
                                {"match": match, "listen": "true", "wait": f"{chunk:.0f}"}, timeout=chunk + 15)
        except HelperError as e:
            status, body, problem = 0, {}, str(e)
        if status == 200 and unlinked_url(body) is None:
            print("You've been authenticated with Git!", file=err)
            return body
        if status == 404:
            print(f"coder-agent: the provider for {match} is gone: {describe(body)}", file=err)
            return None
        if status in (200, 504):
            backoff.reset()
            if status == 200:
                sleep(min(1.0, max(0.0, deadline - monotonic())))
            continue
        problem = problem or describe(body)
        if problem != last_problem:
            print(f"coder-agent: still waiting; the last attempt failed: {problem}", file=err)
            last_problem = problem
        sleep(min(backoff.next_delay(), max(0.0, deadline - monotonic())))


# gitssh --------------------------------------------------------------------------------

class _Signalled(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _private_key_file(private_key: str) -> Iterator[str]:
    fd, path = tempfile.mkstemp(prefix="coder-gitsshkey-")  # 0600, ours alone
    try:
        with os.fdopen(fd, "w") as f:
            # OpenSSH refuses a private key file without its final newline.
            f.write(private_key if private_key.endswith("\n") else private_key + "\n")
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _user_identities(ssh: str, args: Sequence[str]) -> list[str]:
    try:
        res = subprocess.run([ssh, "-G", *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, timeout=30, check=False)
        output: str | None = res.stdout if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        output = None
    return identity_files(output, str(Path.home()), os.path.isfile)


def run_gitssh(args: Sequence[str], client: LocalClient, *, err: IO[str] = sys.stderr) -> int:
    """Run ssh with the Coder key; returns ssh's exit status (128+N if killed by signal N)."""
    ssh = shutil.which("ssh")
    if ssh is None:
        print("coder-agent gitssh: no ssh client on PATH (install openssh-client)", file=err)
        return 127
    child: subprocess.Popen[bytes] | None = None
    forwarded: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if child is not None and child.poll() is None:
            forwarded.append(signum)
            child.send_signal(signum)  # ssh exits; the finally below removes the key
        else:
            raise _Signalled(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        identities = _user_identities(ssh, args)
        key: dict[str, Any] | None = None
        try:
            status, body = get_json(client, "/api/v0/gitsshkey")
            if status == 200 and body.get("private_key"):
                key = body
            else:
                print(f"coder-agent gitssh: cannot get the Coder Git SSH key: {describe(body)}; "
                      "trying your own keys only", file=err)
        except HelperError as e:
            print(f"coder-agent gitssh: {e}; trying your own keys only", file=err)
        with contextlib.ExitStack() as stack:
            key_path = stack.enter_context(_private_key_file(str(key["private_key"]))) if key else None
            child = subprocess.Popen(ssh_argv(identities, key_path, args, ssh=ssh))
            rc = child.wait()
        if rc < 0:
            return 128 - rc
        if rc == 255 and key is not None and not forwarded:
            print(failure_hint(str(key.get("public_key", "")), str(key.get("settings_url", ""))), file=err)
        return rc
    except _Signalled as e:
        return 128 + e.signum
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)
