"""The local HTTP API: the Go agent's ``/api/v0`` paths and JSON, on a unix socket or loopback."""

from .server import LocalAPI, bad_request, json_response, read_json

__all__ = ["LocalAPI", "bad_request", "json_response", "read_json"]
