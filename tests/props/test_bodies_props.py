"""Property tests for the local API request bodies: any JSON in, a value or one 400 out.

* ``appstatus.validate`` (pure): any body gives an :class:`AppStatus` that coderd would store or
  an :class:`Invalid` naming one field; a well-formed body is taken as given.
* ``POST /api/v0/logs`` (:class:`LogsAPI`, driven with a recording pipeline and no server): any
  body gives 202 with every line written, or a codersdk.Response 400/413 with *nothing* written.
* ``format_time``: every time the logs route accepts is written as RFC 3339 that parses back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from typing import Any, cast

from hypothesis import example, given, settings
from hypothesis import strategies as st

from coder_agent.appstatus import MAX_MESSAGE_BYTES, STATES, AppStatus, Invalid, validate
from coder_agent.localapi.server import HTTPResponseError
from coder_agent.logs.api import LogsAPI
from coder_agent.logs.text import LEVELS, format_time
from coder_agent.logsink import LogSource

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                                            max_size=4), max_leaves=12)
# text that tries the edges: NUL, lone surrogates, multi-byte characters
edgy_text = st.text(alphabet=st.characters(codec=None), max_size=30) | st.sampled_from(
    ["", " ", "\x00", "a\x00b", "\ud800", "é" * (MAX_MESSAGE_BYTES // 2 + 1), "x" * MAX_MESSAGE_BYTES])
field_value = st.none() | edgy_text | json_scalars | st.lists(st.text(max_size=3), max_size=2)


def _encodable(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


app_status_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={k: field_value for k in ("app_slug", "state", "message", "uri", "icon")}),
    st.fixed_dictionaries({"app_slug": st.sampled_from(["claude-code", "web"]), "state": st.sampled_from(STATES)},
                          optional={"message": edgy_text, "uri": edgy_text}),
)


@settings(max_examples=300)
@given(app_status_bodies, st.none() | st.lists(st.sampled_from(["claude-code", "web", "x"]), max_size=3))
def test_app_status_validate_gives_a_storable_status_or_one_named_field(body: Any, slugs: list[str] | None) -> None:
    out = validate(body, slugs)
    if isinstance(out, Invalid):
        resp = out.response()
        assert resp["message"] and resp["validations"][0]["field"] == out.field and out.detail
        assert out.field in ("body", "app_slug", "state", "message", "uri", "icon")
        json.dumps(resp)  # sendable as is
        return
    assert isinstance(out, AppStatus)
    assert isinstance(body, dict)
    assert out.state in STATES and out.app_slug.strip()
    assert slugs is None or out.app_slug in slugs
    for v in (out.app_slug, out.message, out.uri):
        assert "\x00" not in v and _encodable(v)
    assert len(out.message.encode()) <= MAX_MESSAGE_BYTES
    # taken as given: nothing silently rewritten
    assert out == AppStatus(body["app_slug"], body["state"], body.get("message") or "", body.get("uri") or "")


# ---- POST /api/v0/logs ------------------------------------------------------------------------


class RecordingPipeline:
    def __init__(self) -> None:
        self.written: list[tuple[str, str, str, dt.datetime | None]] = []

    def source(self, display_name: str, icon: str = "", id: str | None = None) -> LogSource:
        return LogSource(id or "3b579bf4-1ed8-4b99-87a8-e9a1e3410410", display_name, icon)

    def write(self, source: LogSource, output: str, level: str = "info", created_at: dt.datetime | None = None
              ) -> None:
        format_time(created_at or dt.datetime.now(dt.UTC))  # what the real pipeline does first
        self.written.append((source.display_name, output, level, created_at))

    def file_of(self, source: LogSource) -> None:
        return None


class FakeContent:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    async def read(self, n: int = -1) -> bytes:
        return self.raw if n < 0 else self.raw[:n]


class FakeRequest:
    def __init__(self, raw: bytes) -> None:
        self.content_length = len(raw)
        self.content = FakeContent(raw)


times = st.one_of(
    st.datetimes(timezones=st.timezones() | st.just(dt.UTC)).map(lambda d: d.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00+15:00", "9999-12-31T23:59:59-10:00", "0999-06-01T00:00:00Z",
                     "2026-01-01T00:00:00", "2026-13-01T00:00:00Z", "yesterday", ""]),
    json_scalars,
)
log_items = st.one_of(
    json_values,
    st.fixed_dictionaries({"output": edgy_text | json_scalars},
                          optional={"level": st.sampled_from([*LEVELS, "fatal", ""]) | json_scalars,
                                    "created_at": times}),
)
well_formed_logs = st.fixed_dictionaries({
    "source": st.fixed_dictionaries({"display_name": st.text(min_size=1, max_size=10).filter(str.strip)},
                                    optional={"icon": st.text(max_size=5), "id": st.uuids().map(str)}),
    "logs": st.lists(st.fixed_dictionaries({"output": st.text(max_size=20)},
                                           optional={"level": st.sampled_from(LEVELS), "created_at": times}),
                     min_size=1, max_size=4),
})
log_bodies = st.one_of(
    well_formed_logs,
    json_values,
    st.fixed_dictionaries(
        {"source": st.fixed_dictionaries({"display_name": edgy_text | json_scalars},
                                         optional={"icon": field_value,
                                                   "id": st.uuids().map(str) | json_scalars}) | json_values,
         "logs": st.lists(log_items, max_size=4) | json_values}),
)


@settings(max_examples=300, deadline=None)
@given(log_bodies)
def test_logs_body_is_all_written_or_refused_with_nothing_written(body: Any) -> None:
    try:
        raw = json.dumps(body).encode()
    except UnicodeEncodeError:
        return  # not sendable as JSON text
    pipe = RecordingPipeline()
    api = LogsAPI(cast(Any, pipe))
    try:
        resp = asyncio.run(api.post_logs(cast(Any, FakeRequest(raw))))
    except HTTPResponseError as e:
        assert e.response.status in (400, 413)
        assert e.response.text is not None
        err = json.loads(e.response.text)
        assert isinstance(err["message"], str) and err["message"]
        assert pipe.written == []
        return
    assert resp.status == 202
    assert resp.text is not None
    out = json.loads(resp.text)
    assert out["accepted"] == len(body["logs"]) == len(pipe.written)
    assert [w[1] for w in pipe.written] == [item["output"] for item in body["logs"]]
    assert all(w[2] in LEVELS for w in pipe.written)


@given(times)
@example("0001-01-01T00:00:00+15:00")  # no UTC time: was a 500
@example("9999-12-31T23:59:59-10:00")
@example("0999-06-01T00:00:00Z")  # was written as "999-06-01T..." (not RFC 3339)
def test_logs_created_at_is_refused_or_stored_as_rfc3339(created: Any) -> None:
    body = {"source": {"display_name": "props"}, "logs": [{"output": "x", "created_at": created}]}
    pipe = RecordingPipeline()
    try:
        resp = asyncio.run(LogsAPI(cast(Any, pipe)).post_logs(cast(Any, FakeRequest(json.dumps(body).encode()))))
    except HTTPResponseError as e:
        assert e.response.status == 400 and pipe.written == []
        return
    assert resp.status == 202
    stamp = pipe.written[0][3]
    if created not in (None, ""):
        assert stamp is not None
        assert _RFC3339.match(format_time(stamp))


_RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@given(st.datetimes(timezones=st.timezones() | st.just(dt.UTC)))
def test_format_time_is_rfc3339_utc_that_parses_back(t: dt.datetime) -> None:
    try:
        u = t.astimezone(dt.UTC)
    except OverflowError:
        return  # refused by the logs route (400) before it gets here
    s = format_time(t)
    assert _RFC3339.match(s), s
    assert dt.datetime.fromisoformat(s) == u
