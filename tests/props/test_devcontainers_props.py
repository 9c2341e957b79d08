"""Property tests for the Dev Containers parsers not covered by their owner's example tests:
the CLI's output (``cliparse``), label filters and the engine's timestamps (``model``).

Whatever the CLI or the engine prints, the parsers answer (never raise) and what they answer is
clean: user-visible log lines carry no ANSI escape, CR or newline and are never empty.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from coder_agent.devcontainers.cliparse import parse_log_line, parse_result
from coder_agent.devcontainers.model import LabelFilterError, parse_docker_time, parse_label_filters

ansi = st.sampled_from(["\x1b[31m", "\x1b[0m", "\x1b[?25l", "\x1b]0;title\x07", "\r", "\n", "\r\n", ""])
cli_text = st.lists(st.text(max_size=12) | ansi, max_size=8).map("".join)
scalars = st.none() | st.booleans() | st.integers(-10, 10) | st.floats(allow_nan=False) | st.text(max_size=8)
log_objects = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["text", "raw", "start", "stop", "progress"]) | scalars,
    "level": st.integers(-1, 7) | scalars,
    "timestamp": st.integers() | scalars,
    "text": cli_text | scalars,
})
stderr_lines = st.one_of(cli_text, log_objects.map(json.dumps), st.text(max_size=40))


@given(stderr_lines)
@example('{"type":"text","level":"3","text":"\\u001b[1mhello\\r\\nworld"}')
@example('{"type":"progress","level":3,"text":"x"}')
@example("[1]")
def test_any_stderr_line_gives_clean_records(line: str) -> None:
    records = parse_log_line(line)
    for r in records:
        assert r.text and r.text.strip()
        assert "\x1b" not in r.text and "\r" not in r.text and "\n" not in r.text
        assert not any(ord(c) < 0x20 and c != "\t" for c in r.text)  # no control characters reach the log
        assert r.level in ("debug", "info", "warn", "error")
        assert r.user_visible == (r.level != "debug")


@given(st.integers(3, 5), st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1,
                                           max_size=10).filter(str.strip), min_size=1, max_size=4))
def test_a_json_log_line_keeps_its_text_lines(level: int, lines: list[str]) -> None:
    obj = {"type": "text", "level": level, "text": "\n".join(lines)}
    records = parse_log_line(json.dumps(obj))
    assert [r.text for r in records] == [ln.rstrip() for ln in lines]
    assert all(r.user_visible for r in records)


result_objects = st.fixed_dictionaries({}, optional={
    "outcome": st.sampled_from(["success", "error"]) | scalars,
    "containerId": st.text(max_size=12) | scalars,
    "message": scalars, "description": scalars,
})


@given(st.lists(stderr_lines | result_objects.map(json.dumps), max_size=5), st.integers(-2, 3), st.text(max_size=10))
def test_any_stdout_gives_one_outcome(lines: list[str], code: int, last_error: str) -> None:
    r = parse_result(lines, code, last_error)
    if r.error == "":
        assert r.ok  # success carries no error
    if r.ok and r.error:
        assert r.container_id  # a lifecycle failure names the container that is up
    if not r.ok:
        assert r.error and not r.container_id


@given(st.lists(st.text(max_size=12), max_size=5))
def test_label_filters_parse_or_name_the_bad_one(values: list[str]) -> None:
    try:
        out = parse_label_filters(values)
    except LabelFilterError as e:
        bad = [v for v in values if "=" not in v or not v.partition("=")[0].strip()]
        assert bad and repr(bad[0]) in str(e)
        return
    for v in values:
        k, _, _ = v.partition("=")
        assert k in out
    # the last value for a key wins, as in the Go agent's map
    for k, val in out.items():
        assert [v.partition("=")[2] for v in values if v.partition("=")[0] == k][-1] == val


@given(st.datetimes(timezones=st.just(dt.UTC)), st.integers(0, 999), st.sampled_from(["Z", "+00:00", "+02:00"]))
def test_engine_times_with_nanoseconds_parse(t: dt.datetime, nanos: int, tz: str) -> None:
    text = f"{t.year:04d}{t:-%m-%dT%H:%M:%S}.{t.microsecond:06d}{nanos:03d}{tz}"
    got = parse_docker_time(text)
    offset = dt.timedelta(hours=2) if tz == "+02:00" else dt.timedelta(0)
    try:
        want = t.replace(tzinfo=None) - offset
    except OverflowError:
        return
    assert got.tzinfo is not None
    assert got.replace(tzinfo=None) == want or got == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@given(st.none() | st.text(max_size=40))
@example("0001-01-01T00:00:00+05:00")
@example("9999-12-31T23:59:59.999999999-05:00")
def test_any_engine_time_text_gives_an_aware_time(text: Any) -> None:
    try:
        got = parse_docker_time(text)
    except Exception as e:  # pragma: no cover - the property
        pytest.fail(f"parse_docker_time({text!r}) raised {e!r}")
    assert got.tzinfo is not None
