"""git's askpass prompts and what to answer them. Pure: no I/O.

Rules (Coder's ``cli/gitauth/askpass.go`` and ``cli/gitaskpass.go``, git's ``credential.c``):

* git asks ``Username for 'URL': `` then ``Password for 'URL-with-user': ``. The URL is the
  third word with quotes and trailing colons stripped; only ``http``/``https`` with a host are
  accepted. The user part is dropped from the URL sent as ``match`` (coderd matches provider
  regexes against it), the path is kept (``credential.useHttpPath`` puts it there).
* Answering, with the external-auth response: when ``password`` is non-empty the username
  prompt gets ``username`` and the password prompt gets ``password``; otherwise both prompts get
  ``username`` (which is then the token itself, as GitHub and most providers accept).
* A response with no ``access_token``/``username`` but a ``url`` means the user has not linked
  the provider yet: they must open ``url`` in a browser.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["AskpassPrompt", "PromptError", "answer", "parse_prompt", "unlinked_url"]

_EDGES = re.compile(r"""^["']+|["':]+$""")


class PromptError(ValueError):
    """The prompt is not one of git's username/password prompts for an http(s) URL."""


@dataclass(frozen=True)
class AskpassPrompt:
    kind: Literal["username", "password"]
    user: str  # the user named in the prompt's URL ("" if none)
    url: str  # the URL without the user: what coderd's ``match`` is tested against


def parse_prompt(prompt: str) -> AskpassPrompt:
    """Parse one git askpass prompt. Raises :class:`PromptError`."""
    parts = prompt.split()
    if len(parts) < 3:
        raise PromptError(f"not a git credential prompt: {prompt!r}")
    if parts[0] not in ("Username", "Password"):
        raise PromptError(f"unknown prompt type: {prompt!r}")
    raw = _EDGES.sub("", parts[2])
    try:
        u = urllib.parse.urlsplit(raw)
        host = u.hostname
        _ = u.port  # raises on a bad port
    except ValueError as e:
        raise PromptError(f"cannot parse the URL in {prompt!r}: {e}") from None
    if u.scheme not in ("http", "https"):
        raise PromptError(f"unsupported scheme {u.scheme!r} in {prompt!r}")
    if not host:
        raise PromptError(f"no host in {prompt!r}")
    user = urllib.parse.unquote(u.username or "")
    netloc = u.netloc.rpartition("@")[2]
    url = urllib.parse.urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))
    return AskpassPrompt("username" if parts[0] == "Username" else "password", user, url)


def unlinked_url(resp: Mapping[str, Any]) -> str | None:
    """The URL to open when the response says the provider is not linked yet, else None."""
    if resp.get("access_token") or resp.get("username") or resp.get("password"):
        return None
    url = resp.get("url")
    return str(url) if url else None


def answer(prompt: AskpassPrompt, resp: Mapping[str, Any]) -> str:
    """What to print for ``prompt`` given a linked external-auth response."""
    username = str(resp.get("username") or "")
    password = str(resp.get("password") or "")
    if password:
        return username if prompt.kind == "username" else password
    return username
