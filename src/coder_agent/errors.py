"""The one error tree of coder-agent.

Every exception the daemon raises on purpose derives from :class:`CoderAgentError`,
and each says what the user can do about it::

    CoderAgentError
    ├── ConfigError              bad or missing setting; a restart cannot fix it (exit 78)
    ├── ApiError                 coderd answered with a non-success status and a codersdk.Response
    │   └── AuthError            the agent token was refused (401/403) or could not be obtained
    ├── NotAuthenticated         no session token yet: the token provider failed (and reported why)
    ├── TransportError           no answer: DNS, TCP, TLS, timeout, dropped connection
    ├── ProtocolError            the peer broke the wire protocol (bad JSON, bad frame)
    ├── MetadataError            a cloud metadata service could not give an instance identity
    └── FeatureUnavailable       the server or the machine lacks a feature (not a failure)

The retry classifier (:mod:`coder_agent.retry`) decides what each of these means for a loop.
Messages never carry secrets: whoever builds an error passes redacted text only.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "REDACTED",
    "ApiError",
    "AuthError",
    "CoderAgentError",
    "ConfigError",
    "FeatureUnavailable",
    "MetadataError",
    "NotAuthenticated",
    "ProtocolError",
    "TransportError",
]

REDACTED = "[REDACTED]"  # what a secret prints as, everywhere (settings, logs, manifests)


class CoderAgentError(Exception):
    """Base of every error coder-agent raises on purpose."""


class ConfigError(CoderAgentError):
    """A setting is missing or wrong. ``setting`` names it, ``origin`` says where it came from.

    The CLI prints ``str(error)`` as one line and exits 78 (EX_CONFIG).
    """

    def __init__(self, setting: str, message: str, origin: str | None = None) -> None:
        message = " ".join(message.split())  # always one line: the CLI prints it as such
        self.setting = setting
        self.origin = origin
        self.message = message
        where = f" (from {origin})" if origin else ""
        super().__init__(f"{setting}{where}: {message}")


class ApiError(CoderAgentError):
    """coderd (or the devserver) answered ``status`` with a ``codersdk.Response`` body.

    ``message``, ``detail`` and ``validations`` are the server's own words and are shown verbatim.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        detail: str = "",
        validations: list[dict[str, str]] | None = None,
        method: str = "",
        path: str = "",
    ) -> None:
        self.status = status
        self.message = message
        self.detail = detail
        self.validations = validations or []
        self.method = method
        self.path = path
        text = f"{method} {path}: {status} {message}".strip()
        if detail:
            text += f" ({detail})"
        for v in self.validations:
            text += f"; {v.get('field', '?')}: {v.get('detail', '')}"
        super().__init__(text)

    @classmethod
    def from_body(cls, status: int, body: Any, *, method: str = "", path: str = "") -> ApiError:
        """Build from a decoded JSON body, tolerating bodies that are not a codersdk.Response."""
        err_cls: type[ApiError] = AuthError if status in (401, 403) else ApiError
        if isinstance(body, dict):
            vals = body.get("validations") or []
            return err_cls(
                status,
                str(body.get("message") or f"HTTP {status}"),
                detail=str(body.get("detail") or ""),
                validations=[v for v in vals if isinstance(v, dict)],
                method=method,
                path=path,
            )
        return err_cls(status, f"HTTP {status}", method=method, path=path)


class AuthError(ApiError):
    """The agent token was refused or could not be obtained; re-authenticate, then retry."""


class NotAuthenticated(CoderAgentError):
    """The instance-identity token provider could not obtain a session token; ``cause`` says why.

    The provider owns that failure: it logs it (once per change of cause) and shows it in
    ``status`` (``auth.last_error``). Whoever needed the token on the way (the agent RPC dial, the
    reinit watcher, any request) gets this instead, whose text names no server words: it says
    "waiting for authentication" at debug level and tries again; the provider paces the attempts.
    ``refused`` is True when coderd refused the identity (401/404/409 on the exchange).
    """

    def __init__(self, cause: CoderAgentError) -> None:
        self.cause = cause
        self.refused = isinstance(cause, AuthError)
        super().__init__("waiting for authentication")


class TransportError(CoderAgentError):
    """No usable answer arrived: ``stage`` is one of dns, connect, tls, timeout, read, closed."""

    def __init__(self, stage: str, message: str, *, url: str = "") -> None:
        self.stage = stage
        self.url = url
        super().__init__(f"{stage} failed{' for ' + url if url else ''}: {message}")


class ProtocolError(CoderAgentError):
    """The peer sent something the protocol does not allow."""


class MetadataError(CoderAgentError):
    """A cloud metadata service failed; ``url`` and ``stage`` say which call and how."""

    def __init__(self, url: str, stage: str, message: str) -> None:
        self.url = url
        self.stage = stage
        super().__init__(f"metadata service {url}: {stage}: {message}")


class FeatureUnavailable(CoderAgentError):
    """The server or this machine does not offer a feature; log once, do not retry."""
