"""config.example.toml documents every setting, and what it shows is valid.

The file has a few active lines and many optional ones written as ``# key = value``. Two views
are checked: the file as is (it must load), and the file with every optional line switched on
(it must load too, and hold every key of config.SETTINGS, every [[scripts]] and [[log_sources]]
field). Each setting's environment variable and flag must be named in the file as well.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from coder_agent.config import SETTINGS, LogSourceConfig, ScriptConfig, load_settings
from coder_agent.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"
FIELD_NAMES = (
    {part for s in SETTINGS if s.key for part in s.key.split(".")}
    | set(ScriptConfig.model_fields) | set(LogSourceConfig.model_fields)
)
KEY_LINE = re.compile(r"^# ([a-z_]+) = \S")
TABLE_LINE = re.compile(r"^# (\[\[?[a-z_.]+\]\]?)\s*$")


def switched_on(text: str) -> str:
    """Uncomment ``# key = value`` lines for known keys and ``# [table]`` headers."""
    out = []
    for line in text.splitlines():
        m = KEY_LINE.match(line)
        if (m and m.group(1) in FIELD_NAMES) or TABLE_LINE.match(line):
            line = line[2:]
        out.append(line)
    return "\n".join(out) + "\n"


def lookup(doc: dict[str, Any], dotted: str) -> Any:
    cur: Any = doc
    for part in dotted.split("."):
        assert isinstance(cur, dict) and part in cur, f"key {dotted} missing from config.example.toml"
        cur = cur[part]
    return cur


def test_example_as_shipped_parses_and_loads(tmp_path: Path) -> None:
    doc = tomllib.loads(EXAMPLE.read_text())
    assert doc["url"].startswith("https://")
    s = load_settings({}, {"CODER_AGENT_TOKEN": "example-token-value"}, EXAMPLE)
    assert s.url == doc["url"] and s.scripts == [] and s.log_sources == []


def test_every_setting_is_documented_with_a_valid_value(tmp_path: Path) -> None:
    full = switched_on(EXAMPLE.read_text())
    doc = tomllib.loads(full)
    for s in SETTINGS:
        if s.key is None:
            continue
        value = lookup(doc, s.key)
        if s.kind == "table":
            assert isinstance(value, list) and len(value) == 1, s.key
    assert set(doc["scripts"][0]) == set(ScriptConfig.model_fields)
    assert set(doc["log_sources"][0]) == set(LogSourceConfig.model_fields)
    # Every value shown is one the daemon accepts.
    path = tmp_path / "full.toml"
    path.write_text(full)
    settings = load_settings({}, {}, path)
    assert settings.scripts[0].display_name and settings.log_sources[0].path


def test_every_setting_names_its_variable_and_flag() -> None:
    text = EXAMPLE.read_text()
    for s in SETTINGS:
        for name in (s.env, s.flag):
            if name is not None:
                assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), f"{name} not in config.example.toml"


def test_switching_on_a_bad_value_is_caught(tmp_path: Path) -> None:
    """The check above would notice an example value the daemon rejects."""
    bad = tmp_path / "bad.toml"
    bad.write_text(switched_on(EXAMPLE.read_text()).replace('log_level = "info"', 'log_level = "loud"'))
    with pytest.raises(ConfigError, match=r"log_level|CODER_AGENT_LOG_LEVEL"):
        load_settings({}, {}, bad)
