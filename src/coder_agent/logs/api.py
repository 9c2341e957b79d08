"""``POST /api/v0/logs``: ship lines from local tools (``coder-agent log``) under a named source.

Body: ``{"source": {"display_name": str, "icon": str?, "id": uuid?},
"logs": [{"output": str, "level": "trace|debug|info|warn|error"?, "created_at": RFC 3339?}]}``.
Answers 202 once every line is in the source's local file and queued for Coder; 400 with a
codersdk.Response naming the bad field otherwise (nothing is written then).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from aiohttp import web

from ..localapi import json_response
from ..localapi.server import bad_request, read_json
from .pipeline import LogPipeline
from .text import LEVELS

__all__ = ["LogsAPI"]

MAX_BODY = 2 << 20


def _parse_time(v: Any, field: str) -> dt.datetime:
    if not isinstance(v, str):
        raise bad_request("Invalid created_at.", field, "must be an RFC 3339 string")
    try:
        t = dt.datetime.fromisoformat(v.strip())
    except ValueError:
        raise bad_request("Invalid created_at.", field, f"{v!r} is not an RFC 3339 time") from None
    if t.tzinfo is None:
        raise bad_request("Invalid created_at.", field, "needs a timezone (Z or +hh:mm)")
    try:
        t.astimezone(dt.UTC)  # stored in UTC: 0001-01-01T00:00+01:00 has no UTC time (was a 500)
    except OverflowError:
        raise bad_request("Invalid created_at.", field, f"{v!r} is out of range in UTC") from None
    return t


class LogsAPI:
    def __init__(self, pipeline: LogPipeline) -> None:
        self.pipeline = pipeline

    async def post_logs(self, request: web.Request) -> web.Response:
        body = await read_json(request, MAX_BODY)
        if not isinstance(body, dict):
            raise bad_request("Request body must be a JSON object.")
        source = body.get("source")
        if not isinstance(source, dict):
            raise bad_request("Validation failed.", "source", "required: an object with display_name")
        name = source.get("display_name")
        if not isinstance(name, str) or not name.strip():
            raise bad_request("Validation failed.", "source.display_name", "required: a non-empty string")
        icon = source.get("icon", "")
        if icon is None:
            icon = ""
        if not isinstance(icon, str):
            raise bad_request("Validation failed.", "source.icon", "must be a string")
        sid = source.get("id")
        if sid is not None:
            try:
                sid = str(uuid.UUID(str(sid)))
            except ValueError:
                raise bad_request("Validation failed.", "source.id", "must be a UUID") from None
        logs = body.get("logs")
        if not isinstance(logs, list) or not logs:
            raise bad_request("No logs provided.", "logs", "required: a non-empty array")
        parsed: list[tuple[str, str, dt.datetime | None]] = []
        for i, item in enumerate(logs):
            where = f"logs[{i}]"
            if not isinstance(item, dict):
                raise bad_request("Validation failed.", where, "must be an object")
            output = item.get("output")
            if not isinstance(output, str):
                raise bad_request("Validation failed.", f"{where}.output", "required: a string")
            level = item.get("level") or "info"
            if level not in LEVELS:
                raise bad_request("Invalid log level provided.", f"{where}.level",
                                  f"{level!r} is not one of {', '.join(LEVELS)}")
            created = item.get("created_at")
            parsed.append((output, str(level), None if created in (None, "") else
                           _parse_time(created, f"{where}.created_at")))
        src = self.pipeline.source(name.strip(), icon, sid)
        for output, level, created in parsed:
            self.pipeline.write(src, output, level, created)
        path = self.pipeline.file_of(src)
        return json_response({"accepted": len(parsed), "source_id": src.id,
                              "file": str(path) if path else None}, 202)
