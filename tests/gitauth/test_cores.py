"""Pure cores: git prompts and answers, the ssh command line, the wrapper script, export lines."""

from __future__ import annotations

import subprocess

import pytest

from coder_agent.cli.envcmd import format_exports
from coder_agent.gitauth.daemon import wrapper_script
from coder_agent.gitauth.prompt import AskpassPrompt, PromptError, answer, parse_prompt, unlinked_url
from coder_agent.gitauth.sshargs import DEFAULT_IDENTITY_FILES, failure_hint, identity_files, ssh_argv


@pytest.mark.parametrize(("prompt", "expected"), [
    ("Username for 'https://github.com': ", AskpassPrompt("username", "", "https://github.com")),
    ("Password for 'https://alice@github.com': ", AskpassPrompt("password", "alice", "https://github.com")),
    ("Password for 'https://x-token-auth@bitbucket.org:8443': ",
     AskpassPrompt("password", "x-token-auth", "https://bitbucket.org:8443")),
    ("Username for 'http://127.0.0.1:3000/org/repo.git': ",
     AskpassPrompt("username", "", "http://127.0.0.1:3000/org/repo.git")),
    ('Username for "https://gitlab.example.com": ', AskpassPrompt("username", "", "https://gitlab.example.com")),
    ("Password for 'https://user%40corp@host': ", AskpassPrompt("password", "user@corp", "https://host")),
])
def test_parse_prompt(prompt: str, expected: AskpassPrompt) -> None:
    assert parse_prompt(prompt) == expected


@pytest.mark.parametrize("prompt", [
    "", "Username", "Passphrase for key '/root/.ssh/id_rsa': ", "Username for 'ssh://github.com': ",
    "Username for 'https://': ", "Username for 'https://host:notaport': ",
    "Are you sure you want to continue connecting (yes/no)? ",
])
def test_parse_prompt_rejects(prompt: str) -> None:
    with pytest.raises(PromptError):
        parse_prompt(prompt)


def test_answer_rules() -> None:
    user_p = parse_prompt("Username for 'https://gitlab.com': ")
    pass_p = parse_prompt("Password for 'https://oauth2@gitlab.com': ")
    gitlab = {"access_token": "T", "username": "oauth2", "password": "T"}
    assert answer(user_p, gitlab) == "oauth2"
    assert answer(pass_p, gitlab) == "T"
    github = {"access_token": "T", "username": "T", "password": ""}
    assert answer(user_p, github) == "T"
    assert answer(pass_p, github) == "T"  # no password: the token answers both prompts


def test_unlinked_url() -> None:
    assert unlinked_url({"url": "https://coder/external-auth/github"}) == "https://coder/external-auth/github"
    assert unlinked_url({"url": "", "access_token": "T", "username": "T"}) is None
    assert unlinked_url({"access_token": "", "url": ""}) is None


def test_identity_files_from_ssh_g() -> None:
    out = ("user git\nidentityfile ~/.ssh/id_rsa\nidentityfile ~/.ssh/work\n"
           "identityfile /etc/keys/deploy\nidentityfile ~/.ssh/id_rsa\nport 22\n")
    present = {"/home/u/.ssh/work", "/etc/keys/deploy", "/home/u/.ssh/id_rsa"}
    assert identity_files(out, "/home/u", present.__contains__) == [
        "/home/u/.ssh/id_rsa", "/home/u/.ssh/work", "/etc/keys/deploy"]
    assert identity_files("identityfile ~/.ssh/missing\n", "/home/u", present.__contains__) == []


def test_identity_files_fallback_when_ssh_g_failed() -> None:
    got = identity_files(None, "/h", lambda p: p == "/h/.ssh/id_ed25519")
    assert got == ["/h/.ssh/id_ed25519"]
    assert "~/.ssh/id_ed25519" in DEFAULT_IDENTITY_FILES


def test_ssh_argv_orders_user_keys_first() -> None:
    argv = ssh_argv(["/h/.ssh/id_rsa"], "/tmp/coder-gitsshkey-x", ["-p", "2222", "git@host", "git-upload-pack 'r'"])
    assert argv == ["ssh", "-i", "/h/.ssh/id_rsa", "-i", "/tmp/coder-gitsshkey-x",
                    "-p", "2222", "git@host", "git-upload-pack 'r'"]
    assert ssh_argv([], None, ["host"]) == ["ssh", "host"]


def test_failure_hint_names_key_and_pages() -> None:
    text = failure_hint("ssh-ed25519 AAAA coder\n", "https://coder.example.com/settings/ssh-keys")
    assert "ssh-ed25519 AAAA coder" in text
    assert "https://coder.example.com/settings/ssh-keys" in text
    assert "github.com/settings/ssh/new" in text


def test_wrapper_script_keeps_address_literal(tmp_path) -> None:  # type: ignore[no-untyped-def]
    addr = 'unix:/tmp/we ird/$HOME/`x`/"q"/api.sock'
    script = tmp_path / "w"
    script.write_text(wrapper_script(addr, None).replace('exec ', 'printf "%s\\n" "$CODER_AGENT_API_ADDRESS" #'))
    out = subprocess.run(["sh", str(script)], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"}, check=True).stdout
    assert out == addr + "\n"
    out = subprocess.run(["sh", str(script)], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "CODER_AGENT_API_ADDRESS": "unix:/other"}, check=True).stdout
    assert out == "unix:/other\n"  # the caller's address wins


def test_format_exports_round_trips_through_a_shell() -> None:
    env = {"GIT_SSH_COMMAND": "'/state dir/bin/coder-agent' gitssh --", "B": "it's $x `y`", "bad-name": "z"}
    text = format_exports(env)
    assert "bad-name" not in text
    out = subprocess.run(["bash", "-c", text + 'printf "%s|%s" "$GIT_SSH_COMMAND" "$B"'],
                         capture_output=True, text=True, check=True).stdout
    assert out == f"{env['GIT_SSH_COMMAND']}|{env['B']}"
