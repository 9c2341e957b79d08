"""A real ``git clone`` over HTTP, answered by ``coder-agent git-askpass`` from the daemon's
GIT_ASKPASS, with credentials from the devserver's external auth."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import httpx
import pytest

from ..conftest import apoll, t, unavailable
from .conftest import Env, require, run
from .servers import GitHTTPServer, make_repo

pytestmark = pytest.mark.timeout(60)


async def test_clone_with_linked_provider(gitenv: Env) -> None:
    token = "gho_linked0123456789abcdef"
    repos = gitenv.tmp / "repos"
    repos.mkdir()
    make_repo(repos)
    with GitHTTPServer(repos, accept={(token, token)}) as srv:
        gitenv.state.add_provider("github", rf"^http://127\.0\.0\.1:{srv.port}(/|$)", "github")
        gitenv.state.link("github", token)
        env = gitenv.base_env()
        assert env["GIT_ASKPASS"].endswith("/bin/git-askpass") and os.access(env["GIT_ASKPASS"], os.X_OK)
        assert token not in "".join(env.values())  # no credential lies in the environment
        rc, _, err = await run(["git", "clone", f"{srv.url}/repo.git", str(gitenv.tmp / "clone")], env)
        assert rc == 0, err
        assert (gitenv.tmp / "clone" / "README").read_text() == "hello from coder\n"
        assert srv.attempts[0] is None and (token, token) in srv.attempts  # asked, then answered
    # the daemon asked coderd with match = the URL git prompted for
    queries = [r.query for r in gitenv.ds.requests_to("/me/external-auth")]
    assert {"match": srv.url} in queries
    assert token not in gitenv.logs()


async def test_clone_gitlab_style_username_and_password(gitenv: Env) -> None:
    token = "glpat-0123456789abcdef"
    repos = gitenv.tmp / "repos"
    repos.mkdir()
    make_repo(repos)
    with GitHTTPServer(repos, accept={("oauth2", token)}) as srv:
        gitenv.state.add_provider("gitlab", "127.0.0.1", "gitlab")
        gitenv.state.link("gitlab", token)
        rc, _, err = await run(["git", "clone", f"{srv.url}/repo.git", str(gitenv.tmp / "clone")], gitenv.base_env())
        assert rc == 0, err
        assert ("oauth2", token) in srv.attempts


async def test_unlinked_provider_prints_url_and_completes_once_linked(gitenv: Env) -> None:
    repos = gitenv.tmp / "repos"
    repos.mkdir()
    make_repo(repos)
    gitenv.state.add_provider("github", "127.0.0.1", "github")
    token = "gho_afterbrowser0123456789"
    with GitHTTPServer(repos, accept={(token, token)}) as srv:
        errlog = gitenv.tmp / "clone-stderr"
        clone = asyncio.create_task(run(["git", "clone", f"{srv.url}/repo.git", str(gitenv.tmp / "clone")],
                                        gitenv.base_env(), stderr_path=errlog))
        link_url = f"{gitenv.ds.url}/external-auth/github"
        await apoll(lambda: errlog.exists() and link_url in errlog.read_text(), 20)
        # the helper is now long-polling with listen; nothing is linked, so the clone waits
        await apoll(lambda: any("listen" in r.query for r in gitenv.ds.requests_to("/me/external-auth")), 10)
        await asyncio.sleep(0.5)
        assert not clone.done()
        gitenv.state.link("github", token)  # the user finished the flow in the browser
        rc, _, err = await clone
        assert rc == 0, err
        assert "You've been authenticated with Git!" in err
        assert (gitenv.tmp / "clone" / "README").exists()


async def test_no_matching_provider_falls_back_to_git(gitenv: Env) -> None:
    repos = gitenv.tmp / "repos"
    repos.mkdir()
    make_repo(repos)
    gitenv.state.add_provider("github", r"^https://github\.com", "github")
    with GitHTTPServer(repos, accept={("u", "p")}) as srv:
        rc, _, err = await run(["git", "clone", f"{srv.url}/repo.git", str(gitenv.tmp / "clone")],
                               gitenv.base_env(), timeout=20)
    assert rc != 0
    assert "no Coder external auth provider matches" in err
    assert "terminal prompts disabled" in err  # git went on with its own behaviour
    assert not (gitenv.tmp / "clone").exists()
    assert all(a is None for a in srv.attempts)  # nothing was answered for it
    assert any(r.status == 404 for r in gitenv.ds.requests_to("/me/external-auth"))
    # the daemon's route: coderd's validation and its 404 message pass through as codersdk.Responses
    r = gitenv.daemon.api("GET", "/api/v0/external-auth")
    assert (r.status_code, r.json()["message"]) == (400, "'url' or 'id' must be provided!")
    # (in a thread: the daemon asks the devserver, which runs on this event loop)
    r = await asyncio.to_thread(gitenv.daemon.api, "GET", "/api/v0/external-auth", params={"match": "https://gitlab.com"})
    assert r.status_code == 404 and r.json()["message"].startswith("No matching external auth provider")
    assert "github=" in r.json()["detail"]


async def test_askpass_wait_is_bounded_and_interruptible(gitenv: Env) -> None:
    gitenv.state.add_provider("github", "example", "github")
    argv = [sys.executable, "-m", "coder_agent", "git-askpass", "Username for 'https://example.com': "]
    rc, out, err = await run(argv, gitenv.base_env(CODER_AGENT_GIT_ASKPASS_TIMEOUT="1.5"), timeout=20)
    assert rc == 1 and out == ""
    assert f"{gitenv.ds.url}/external-auth/github" in err and "timed out" in err

    errlog = gitenv.tmp / "askpass-stderr"
    proc = await asyncio.create_subprocess_exec(*argv, env=gitenv.base_env(), stdout=asyncio.subprocess.PIPE,
                                                stderr=open(errlog, "wb"), start_new_session=True)  # noqa: SIM115
    await apoll(lambda: "Ctrl-C" in errlog.read_text(), 20)
    proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(proc.wait(), t(10)) == 130
    assert "gave up" in errlog.read_text()
    # the daemon dropped its upstream long-poll once the helper went away
    key = "GET /api/v2/workspaceagents/me/external-auth"
    await apoll(lambda: gitenv.ds.state.in_flight.get(key) == 0, 5)


async def test_env_command_prints_exports(gitenv: Env) -> None:
    env = gitenv.base_env()
    rc, out, err = await run(["bash", "-c", f'eval "$({sys.executable} -m coder_agent env)"; '
                              'printf "%s\\n%s\\n%s" "$GIT_ASKPASS" "$GIT_SSH_COMMAND" "$CODER_AGENT_API_ADDRESS"'],
                             {k: v for k, v in env.items() if k not in ("GIT_ASKPASS", "GIT_SSH_COMMAND")})
    assert rc == 0, err
    child = gitenv.child_env()
    assert out.splitlines() == [child["GIT_ASKPASS"], child["GIT_SSH_COMMAND"], child["CODER_AGENT_API_ADDRESS"]]
    assert child["GIT_SSH_COMMAND"].endswith(" gitssh --")
    st = gitenv.daemon.api("GET", "/api/v0/status").json()
    assert st["gitauth"]["git_askpass"] == child["GIT_ASKPASS"]
    assert st["services"]["gitauth"]["state"] == "ok"


def test_daemon_of_another_user_is_explained(short_tmp) -> None:  # type: ignore[no-untyped-def]
    import socket as so

    from coder_agent.gitauth.helper import unreachable_message

    path = short_tmp / "api.sock"
    with so.socket(so.AF_UNIX) as s:
        s.bind(str(path))
        os.chmod(path, 0o600)
        other = os.stat(path).st_uid + 1000
        text = unreachable_message(f"unix:{path}", "ConnectError", euid=other, access=lambda p, m: False)
        assert f"belongs to uid {os.stat(path).st_uid} and you are uid {other}" in text
        assert "daemon's own user" in text
    assert "not running" in unreachable_message(f"unix:{short_tmp}/none.sock", "x")


async def test_tcp_local_api_does_not_serve_credentials(devserver, daemon_env, spawn_daemon) -> None:  # type: ignore[no-untyped-def]
    from .servers import free_port

    port = free_port()
    d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token, CODER_AGENT_API_ADDRESS=f"127.0.0.1:{port}"))

    def up() -> bool:
        try:
            return d.api("GET", "/api/v0/status").status_code == 200
        except httpx.HTTPError:
            return False

    await apoll(up, 20)
    r = d.api("GET", "/api/v0/gitsshkey")
    assert r.status_code == 403 and "unix socket" in r.json()["message"]
    assert d.api("GET", "/api/v0/external-auth", params={"match": "https://x"}).status_code == 403
    assert not devserver.requests_to("/me/gitsshkey")


async def test_helper_run_by_another_user_gets_a_clear_error(gitenv: Env) -> None:
    """The real thing behind the explanation above: the daemon (root here) owns a 0600 socket and
    ``git-askpass`` runs as uid 65534 (setpriv): one clear line, no answer, a failing exit for git."""
    if os.geteuid() != 0:
        unavailable("needs root to switch users")
    require("setpriv")
    os.chmod(gitenv.tmp, 0o755)  # let the other user reach the socket's directory; the socket stays 0600
    env = gitenv.base_env()
    sock = env["CODER_AGENT_API_ADDRESS"].removeprefix("unix:")
    assert os.stat(sock).st_mode & 0o777 == 0o600
    rc, out, err = await run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                              sys.executable, "-m", "coder_agent", "git-askpass",
                              "Username for 'https://github.com': "], env, cwd="/")
    assert rc != 0 and out == ""
    assert "belongs to uid 0 and you are uid 65534" in err and "daemon's own user" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not gitenv.ds.requests_to("/me/external-auth")  # nothing was asked of coderd
