"""Property tests: any environment or TOML text yields Settings or one ConfigError, nothing else."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from coder_agent.config import SETTINGS, load_settings
from coder_agent.errors import ConfigError

ENV_NAMES = [s.env for s in SETTINGS if s.env]
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(ENV_NAMES), text, max_size=8))
def test_any_environment_gives_settings_or_one_config_error(env: dict[str, str]) -> None:
    env = {"CODER_AGENT_URL": "http://x", "CODER_AGENT_TOKEN": "t" * 36, **env}
    try:
        load_settings({}, env=env)
    except ConfigError as e:
        assert "\n" not in str(e)
        assert e.setting


toml_value = st.one_of(text, st.integers(), st.booleans(), st.lists(text, max_size=3), st.floats(allow_nan=False))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from([s.key.split(".")[0] for s in SETTINGS if s.key] + ["junk"]),
                       toml_value, max_size=6))
def test_any_toml_document_gives_settings_or_one_config_error(doc: dict[str, object]) -> None:
    import json

    lines = ['url = "http://x"', f'token = "{"t" * 36}"']
    for k, v in doc.items():
        if k in ("url", "token"):
            continue
        lines.append(f"{k} = {json.dumps(v)}")
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.toml"
        p.write_text("\n".join(lines) + "\n")
        try:
            load_settings({}, env={}, config_file=p)
        except ConfigError as e:
            assert e.setting and "\n" not in str(e)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_config_files_are_config_errors(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.toml"
        p.write_bytes(data)
        try:
            load_settings({}, env={"CODER_AGENT_URL": "http://x", "CODER_AGENT_TOKEN": "t" * 36}, config_file=p)
        except ConfigError as e:
            assert "\n" not in str(e)
