"""``coder-agent gitssh`` runs a real ``ssh`` against a real sshd on loopback with the
devserver's Coder key; git clones over SSH through GIT_SSH_COMMAND from the daemon's env."""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Env, require, run
from .servers import SSHD, make_repo

pytestmark = pytest.mark.timeout(60)
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
            "-o", "LogLevel=ERROR"]


@pytest.fixture
def sshd(short_tmp: Path) -> Iterator[SSHD]:
    require("/usr/sbin/sshd", "ssh", "ssh-keygen")
    root = short_tmp / "sshd"
    root.mkdir()
    s = SSHD(root).start()
    yield s
    s.stop()


def _gitssh(sshd: SSHD, *remote: str) -> list[str]:
    return [sys.executable, "-m", "coder_agent", "gitssh", "--", *SSH_OPTS, "-p", str(sshd.port),
            "root@127.0.0.1", *remote]


def _fingerprint(public_key: str, tmp: Path) -> str:
    p = tmp / "fp.pub"
    p.write_text(public_key)
    return subprocess.run(["ssh-keygen", "-l", "-f", str(p)], capture_output=True, text=True,
                          check=True).stdout.split()[1]


async def test_gitssh_runs_ssh_with_the_coder_key(gitenv: Env, sshd: SSHD) -> None:
    public, private = gitenv.state.key_pair()
    sshd.authorized_keys.write_text(public)
    tmpdir = gitenv.tmp / "tmp"
    # sshd runs on this machine: the remote command can see the key file while ssh runs
    rc, out, err = await run(_gitssh(sshd, f"stat -c '%a %n' {tmpdir}/*; echo hello-from-sshd; exit 7"),
                             gitenv.base_env())
    assert rc == 7, err  # ssh's exit code passes through
    mode, name = out.splitlines()[0].split()
    assert (mode, Path(name).name.startswith("coder-gitsshkey-")) == ("600", True)
    assert out.splitlines()[1] == "hello-from-sshd"
    assert list((gitenv.tmp / "tmp").iterdir()) == []  # the temp key file is gone
    assert _fingerprint(public, gitenv.tmp) in sshd.log.read_text()  # accepted with the Coder key
    assert private not in gitenv.logs() + err + out
    assert gitenv.ds.requests_to("/me/gitsshkey")


async def test_key_file_removed_when_the_helper_is_signalled(gitenv: Env, sshd: SSHD) -> None:
    import asyncio
    import signal

    from ..conftest import apoll, t

    public, _ = gitenv.state.key_pair()
    sshd.authorized_keys.write_text(public)
    tmpdir = gitenv.tmp / "tmp"
    errlog = gitenv.tmp / "gitssh-stderr"
    proc = await asyncio.create_subprocess_exec(*_gitssh(sshd, "echo started; sleep 60"), env=gitenv.base_env(),
                                                stdout=asyncio.subprocess.PIPE, stderr=open(errlog, "wb"),  # noqa: SIM115
                                                start_new_session=True)
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), t(20)) == b"started\n"
    assert len(list(tmpdir.iterdir())) == 1
    proc.send_signal(signal.SIGTERM)  # to the helper only: it forwards to ssh and cleans up
    rc = await asyncio.wait_for(proc.wait(), t(10))
    assert rc != 0
    await apoll(lambda: list(tmpdir.iterdir()) == [], 2)
    assert public.strip() not in errlog.read_text()  # an interrupted ssh is not an auth failure


async def test_user_identities_are_offered_first(gitenv: Env, sshd: SSHD) -> None:
    ssh_dir = gitenv.home / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh_dir / "id_ed25519")], check=True)
    user_pub = (ssh_dir / "id_ed25519.pub").read_text()
    coder_pub, _ = gitenv.state.key_pair()
    sshd.authorized_keys.write_text(user_pub + coder_pub)  # both would do: the first offered wins
    rc, _, err = await run(_gitssh(sshd, "true"), gitenv.base_env())
    assert rc == 0, err
    log = sshd.log.read_text()
    assert _fingerprint(user_pub, gitenv.tmp) in log
    assert _fingerprint(coder_pub, gitenv.tmp) not in log


async def test_failing_ssh_prints_the_public_key(gitenv: Env, sshd: SSHD) -> None:
    public, private = gitenv.state.key_pair()
    sshd.authorized_keys.write_text("")  # the key is not registered with this server
    rc, out, err = await run(_gitssh(sshd, "true"), gitenv.base_env())
    assert rc == 255
    assert public.strip() in err
    assert f"{gitenv.ds.url}/settings/ssh-keys" in err
    assert private not in err + out + gitenv.logs()
    assert list((gitenv.tmp / "tmp").iterdir()) == []


async def test_git_clone_over_ssh_with_git_ssh_command(gitenv: Env, sshd: SSHD) -> None:
    repos = gitenv.tmp / "repos"
    repos.mkdir()
    bare = make_repo(repos)
    public, _ = gitenv.state.key_pair()
    sshd.authorized_keys.write_text(public)
    env = gitenv.base_env()
    # the daemon's GIT_SSH_COMMAND, plus the options a test host needs
    env["GIT_SSH_COMMAND"] = env["GIT_SSH_COMMAND"] + " " + shlex.join(SSH_OPTS)
    url = f"ssh://root@127.0.0.1:{sshd.port}{bare}"
    rc, _, err = await run(["git", "clone", url, str(gitenv.tmp / "clone")], env)
    assert rc == 0, err
    assert (gitenv.tmp / "clone" / "README").read_text() == "hello from coder\n"
    assert list((gitenv.tmp / "tmp").iterdir()) == []
