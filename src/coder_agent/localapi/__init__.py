"""The local HTTP API: the Go agent's ``/api/v0`` paths and JSON, on a unix socket or loopback."""

from .server import Handler, LocalAPI, Routes, bad_request, json_response, read_json

__all__ = ["Handler", "LocalAPI", "Routes", "bad_request", "json_response", "read_json"]
