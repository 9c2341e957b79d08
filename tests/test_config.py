"""Config precedence, every error path (exit 78 with one line), and redaction."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from coder_agent.config import load_settings, redacted_view
from coder_agent.errors import ConfigError

TOKEN = "5b9f2c4e-8d1a-4f6b-9c3e-2a7d8e1f0b4c"
BASE = {"CODER_AGENT_URL": "http://127.0.0.1:1", "CODER_AGENT_TOKEN": TOKEN}


def write(tmp: Path, text: str) -> Path:
    p = tmp / "c.toml"
    p.write_text(text)
    return p


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'url = "http://file"\ntoken = "t-file-000"\nagent_name = "file"\nlog_level = "debug"\n'
                          '[api]\naddress = "127.0.0.1:7000"\n')
    env = {"CODER_AGENT_URL": "http://env", "CODER_AGENT_NAME": "env"}
    s = load_settings({"url": "http://flag"}, env=env, config_file=cfg)
    assert s.url == "http://flag"  # flag wins
    assert s.agent_name == "env"  # env beats file
    assert s.log_level == "debug"  # file beats default
    assert s.api_address == "127.0.0.1:7000"
    assert s.prometheus_address == "127.0.0.1:2112"  # default


def test_config_file_from_env_variable(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'url = "http://file"\ntoken = "t-file-000"\n')
    s = load_settings({}, env={"CODER_AGENT_CONFIG": str(cfg)})
    assert s.url == "http://file"


def test_headers_repeatable_and_env_list(tmp_path: Path) -> None:
    s = load_settings({"headers": ["X-A=1", "X-B=two=2"]}, env=BASE)
    assert {k: v.get_secret_value() for k, v in s.headers.items()} == {"X-A": "1", "X-B": "two=2"}
    s = load_settings({}, env={**BASE, "CODER_AGENT_HEADER": "X-A=1,X-C=3"})
    assert set(s.headers) == {"X-A", "X-C"}


def test_token_file_ok(tmp_path: Path) -> None:
    f = tmp_path / "tok"
    f.write_text(f"  {TOKEN}\n")
    s = load_settings({}, env={"CODER_AGENT_URL": "http://x", "CODER_AGENT_TOKEN_FILE": str(f)})
    assert s.token_file == f


@pytest.mark.parametrize(
    ("env", "flags", "toml", "setting", "fragment"),
    [
        ({}, {}, None, "CODER_AGENT_URL", "must be set"),
        ({"CODER_AGENT_URL": "ftp://x", "CODER_AGENT_TOKEN": TOKEN}, {}, None, "CODER_AGENT_URL", "http://"),
        ({"CODER_AGENT_URL": "http://x"}, {}, None, "CODER_AGENT_TOKEN", "CODER_AGENT_TOKEN_FILE must be set"),
        ({"CODER_AGENT_URL": "http://x", "CODER_AGENT_TOKEN_FILE": "/nonexistent/tok"}, {}, None,
         "CODER_AGENT_TOKEN_FILE", "cannot read"),
        ({**BASE, "CODER_AGENT_AUTH": "kerberos"}, {}, None, "CODER_AGENT_AUTH", "token"),
        ({**BASE, "CODER_AGENT_DEVCONTAINERS_ENABLE": "maybe"}, {}, None, "CODER_AGENT_DEVCONTAINERS_ENABLE",
         "true or false"),
        ({**BASE, "CODER_AGENT_HEADER": "novalue"}, {}, None, "CODER_AGENT_HEADER", "key=value"),
        ({**BASE, "CODER_AGENT_PORTS_IGNORE": "80,x"}, {}, None, "CODER_AGENT_PORTS_IGNORE", "port numbers"),
        ({**BASE, "CODER_AGENT_PORTS_IGNORE": "70000"}, {}, None, "CODER_AGENT_PORTS_IGNORE", "out of range"),
        ({**BASE, "CODER_AGENT_API_ADDRESS": "0.0.0.0:9000"}, {}, None, "CODER_AGENT_API_ADDRESS", "not loopback"),
        ({**BASE, "CODER_AGENT_API_ADDRESS": "nonsense"}, {}, None, "CODER_AGENT_API_ADDRESS", "unix:PATH"),
        ({**BASE, "CODER_AGENT_LOG_FORMAT": "xml"}, {}, None, "CODER_AGENT_LOG_FORMAT", "console"),
        (BASE, {"shutdown_timeout": "-1"}, None, "CODER_AGENT_SHUTDOWN_TIMEOUT", "greater than 0"),
        ({**BASE, "CODER_AGENT_RECONNECTING_PTY_TIMEOUT": "0"}, {}, None, "CODER_AGENT_RECONNECTING_PTY_TIMEOUT",
         "greater than 0"),
        ({**BASE, "CODER_AGENT_SSH_MAX_TIMEOUT": "soon"}, {}, None, "CODER_AGENT_SSH_MAX_TIMEOUT", "duration"),
        (BASE, {}, "url = [", "--config", "not valid TOML"),
        (BASE, {}, "bogus = 1\n", "bogus", "unknown key"),
        (BASE, {}, '[[scripts]]\ndisplay_name = "x"\nscript = "true"\ntimeout = -3\n', "scripts.0.timeout",
         "greater than or equal"),
        (BASE, {}, '[[log_sources]]\ndisplay_name = "x"\n', "log_sources.0.path", "required"),
    ],
)
def test_every_config_error_names_the_setting(
    tmp_path: Path, env: dict[str, str], flags: dict[str, str], toml: str | None, setting: str, fragment: str
) -> None:
    cfg = write(tmp_path, toml) if toml is not None else None
    with pytest.raises(ConfigError) as ei:
        load_settings(flags, env=env, config_file=cfg)
    assert ei.value.setting == setting
    assert fragment in str(ei.value)
    assert "\n" not in str(ei.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings({}, env=BASE, config_file=tmp_path / "missing.toml")


def test_error_says_where_the_value_came_from(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'url = "gopher://x"\n')
    with pytest.raises(ConfigError) as ei:
        load_settings({}, env={"CODER_AGENT_TOKEN": TOKEN}, config_file=cfg)
    assert ei.value.origin is not None and "key url" in ei.value.origin


def test_redacted_view_hides_every_secret() -> None:
    s = load_settings({"headers": ["Authorization=Bearer sekrit-header-value"]}, env=BASE)
    view = redacted_view(s)
    text = repr(view)
    assert TOKEN not in text and "sekrit-header-value" not in text
    assert view["token"] == "[REDACTED]" and view["headers"] == {"Authorization": "[REDACTED]"}


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("CODER_AGENT_")}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "coder_agent", *args], env=full, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["run"], {}, "CODER_AGENT_URL"),
        (["run"], {"CODER_AGENT_URL": "http://127.0.0.1:1"}, "CODER_AGENT_TOKEN or CODER_AGENT_TOKEN_FILE"),
        (["run"], {"CODER_AGENT_URL": "http://x", "CODER_AGENT_TOKEN_FILE": "/nope/tok"}, "cannot read /nope/tok"),
        (["run", "--config", "/nope.toml"], {}, "cannot read /nope.toml"),
        (["config", "check"], {"CODER_AGENT_URL": "http://x", "CODER_AGENT_TOKEN": TOKEN,
                               "CODER_AGENT_AUTH": "bogus"}, "CODER_AGENT_AUTH"),
    ],
)
def test_cli_config_errors_exit_78_with_one_line(args: list[str], env: dict[str, str], needle: str) -> None:
    r = run_cli(*args, env=env)
    assert r.returncode == 78, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert needle in lines[0]
    assert "Traceback" not in r.stderr


def test_config_check_redacts_token_from_env_file_and_flag(tmp_path: Path) -> None:
    tok_env, tok_flag, hdr = "env-token-aaaa-1111", "flag-token-bbbb-2222", "hdr-secret-cccc-3333"
    cfg = write(tmp_path, 'url = "http://x"\ntoken = "file-token-dddd-4444"\n')
    for args, env in [
        (["config", "check", "--config", str(cfg)], {}),
        (["config", "check", "--config", str(cfg)], {"CODER_AGENT_TOKEN": tok_env}),
        (["config", "check", "--config", str(cfg), "--agent-token", tok_flag, "--agent-header", f"X-K={hdr}"], {}),
        (["config", "check", "--json", "--config", str(cfg), "--agent-token", tok_flag], {}),
    ]:
        r = run_cli(*args, env=env)
        assert r.returncode == 0, r.stderr
        out = r.stdout + r.stderr
        for secret in (tok_env, tok_flag, hdr, "file-token-dddd-4444"):
            assert secret not in out
        assert "[REDACTED]" in out
