"""``POST /api/v0/logs``: ship lines from local tools (``coder-agent log``) under a named source.

Body: ``{"source": {"display_name": str, "icon": str?, "id": uuid?},
"logs": [{"output": str, "level": "trace|debug|info|warn|error"?, "created_at": RFC 3339?}]}``.
The body is validated as :class:`~coder_agent.localapi.models.LogsRequest` (pydantic) before
anything is written. Answers 202 once every line is in the source's local file and queued for
Coder; 400 with a codersdk.Response naming the bad field otherwise (nothing is written then).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from ..localapi import json_response
from ..localapi.models import LogsRequest
from ..localapi.server import HTTPResponseError, bad_request, read_json
from .pipeline import LogPipeline

__all__ = ["LogsAPI"]

MAX_BODY = 2 << 20
_MESSAGES = {"level": "Invalid log level provided.", "created_at": "Invalid created_at."}


def _refusal(e: ValidationError) -> HTTPResponseError:
    """The first error as a 400 naming its field the way the Go agent does (``logs[0].level``)."""
    err = e.errors(include_url=False, include_input=False, include_context=False)[0]
    loc: tuple[Any, ...] = err["loc"]
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "body"
    detail = "required" if err["type"] == "missing" else str(err["msg"]).removeprefix("Value error, ")
    if loc == ("logs",):
        message = "No logs provided."
    else:
        message = _MESSAGES.get(str(loc[-1]), "Validation failed.") if loc else "Validation failed."
    return bad_request(message, field, " ".join(detail.split()))


class LogsAPI:
    def __init__(self, pipeline: LogPipeline) -> None:
        self.pipeline = pipeline

    async def post_logs(self, request: web.Request) -> web.Response:
        body = await read_json(request, MAX_BODY)
        if not isinstance(body, dict):
            raise bad_request("Request body must be a JSON object.")
        try:
            req = LogsRequest.model_validate(body)
        except ValidationError as e:
            raise _refusal(e) from None
        sid = str(req.source.id) if req.source.id is not None else None
        src = self.pipeline.source(req.source.display_name, req.source.icon or "", sid)
        for line in req.logs:
            self.pipeline.write(src, line.output, line.level or "info", line.created_at)
        path = self.pipeline.file_of(src)
        return json_response({"accepted": len(req.logs), "source_id": src.id,
                              "file": str(path) if path else None}, 202)
