"""What the agent reads from a ``devcontainer.json`` itself (pure: text in, values out).

The file is JSON with comments (``//``, ``/* */``) and trailing commas, as the Dev Containers
CLI accepts it. The Go agent reads it through ``devcontainer read-configuration``; the one field
we need, ``customizations.coder.autoStart`` (Go's ``CoderCustomization.AutoStart``), is read here
from the file, without a Node process per project. As in Go, only a JSON ``true`` counts (a
string ``"true"`` fails Go's decoding into a bool, so it never starts anything there either).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["autostart", "loads"]


def _strip(text: str) -> str:
    """Comments become a space and trailing commas go; strings are copied untouched."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
            out.append(" ")
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise ValueError("unterminated /* comment")
            i = j + 2
            out.append(" ")
        else:
            if c in "}]":
                k = len(out) - 1
                while k >= 0 and out[k].isspace():
                    k -= 1
                if k >= 0 and out[k] == ",":
                    out[k] = " "
            out.append(c)
            i += 1
    return "".join(out)


def loads(text: str) -> Any:
    """Parse devcontainer.json text; raises ValueError (with json's position) when invalid."""
    return json.loads(_strip(text.removeprefix("\ufeff")))


def autostart(text: str) -> bool:
    """``customizations.coder.autoStart`` is ``true``; raises ValueError for an unreadable file."""
    doc = loads(text)
    if not isinstance(doc, dict):
        raise ValueError("devcontainer.json is not a JSON object")
    node: Any = doc
    for key in ("customizations", "coder", "autoStart"):
        node = node.get(key) if isinstance(node, dict) else None
    return node is True
