"""What a reinit event means and whether we act on it. Pure: no I/O, no clock.

Rules:

* A ``data`` event carries ``{"workspace_id", "reason", "owner_id"}``; older coderd spelled the
  first key ``workspaceID``, so both are accepted. ``owner_id`` is omitted when zero (read as
  ""). Anything else (not JSON, not an object, no workspace id) is a :class:`ProtocolError`.
* Only ``prebuild_claimed`` is acted on; other reasons are ignored (the watcher says so once).
* A claim for another workspace than the one our manifest names is ignored: reinit happens
  only on an explicit signal about *us* (USER-PAIN 24).
* Exactly once: the last handled claim is a durable record ``{workspace_id, owner_id}``. A claim
  equal to it is a duplicate (a repeated event, the server's pre-seeded event on reconnect, or
  the same event after a daemon restart); a different owner is a new claim. The caller writes
  the record *before* acting, so a crash mid-reinit never leads to a second one.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from ..errors import ProtocolError

__all__ = ["KNOWN_REASONS", "PREBUILD_CLAIMED", "STATE_KEY", "Claim", "Verdict", "decide", "parse_claim"]

PREBUILD_CLAIMED = "prebuild_claimed"
KNOWN_REASONS = frozenset({PREBUILD_CLAIMED})
STATE_KEY = "reinit"  # the StateStore document holding the last handled claim


@dataclass(frozen=True)
class Claim:
    workspace_id: str
    reason: str
    owner_id: str = ""

    def record(self) -> dict[str, str]:
        """The durable form (what :func:`decide` compares against)."""
        return {"workspace_id": self.workspace_id, "owner_id": self.owner_id, "reason": self.reason}


def _norm(v: Any) -> str:
    return v.strip().lower() if isinstance(v, str) else ""


def parse_claim(data: str) -> Claim:
    """Decode a ``data`` event's payload. Raises ProtocolError when it is not a reinit event."""
    try:
        obj = json.loads(data)
    except ValueError:
        raise ProtocolError("reinit event data is not JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError("reinit event data is not a JSON object")
    ws = _norm(obj.get("workspace_id")) or _norm(obj.get("workspaceID"))
    if not ws:
        raise ProtocolError("reinit event has no workspace_id")
    reason = obj.get("reason")
    owner = _norm(obj.get("owner_id"))
    if owner == "00000000-0000-0000-0000-000000000000":
        owner = ""
    return Claim(ws, reason if isinstance(reason, str) else "", owner)


class Verdict(enum.Enum):
    REINIT = "reinit"
    DUPLICATE = "duplicate"  # this claim was handled already (maybe by an earlier process)
    UNKNOWN_REASON = "unknown_reason"
    OTHER_WORKSPACE = "other_workspace"


def decide(claim: Claim, handled: Any, our_workspace_id: str | None) -> Verdict:
    """Act on ``claim``? ``handled`` is the stored record (anything: it may be corrupt or absent);
    ``our_workspace_id`` the manifest's workspace id when known."""
    if claim.reason not in KNOWN_REASONS:
        return Verdict.UNKNOWN_REASON
    ours = _norm(our_workspace_id)
    if ours and ours != claim.workspace_id:
        return Verdict.OTHER_WORKSPACE
    if (isinstance(handled, dict) and _norm(handled.get("workspace_id")) == claim.workspace_id
            and _norm(handled.get("owner_id")) == claim.owner_id):
        return Verdict.DUPLICATE
    return Verdict.REINIT
