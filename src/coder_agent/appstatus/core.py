"""The app-status delivery queue and the request validation: pure, no I/O, no clock.

Callers pass monotonic time (``now``) and wall time (``wall``, ISO text) in; the asyncio layer
(:mod:`coder_agent.appstatus.service`) moves statuses between the local API, this queue, the
state store and the transport.

Rules, per app slug (slugs are independent):

* **Identical is sent once.** A status equal (same ``state``, ``message`` and ``uri``) to the
  newest one already queued for the slug — or, with nothing queued, to the last one delivered —
  is not queued again; the caller gets the existing entry's id. Coder stores every PATCH as a
  new row, so an identical repeat is pure noise.
* **Bursts coalesce, latest wins.** A new entry waits ``debounce`` seconds before it may be
  sent. While it waits (and also while it waits for a retry after a failed attempt), a status
  with the *same state* replaces its message and uri. The window is fixed from the entry's
  first status, so a steady stream still goes out every ``debounce`` seconds.
* **Every transition is delivered, in order.** A status with a different state than the newest
  queued one is appended, never merged: working→idle→working is three deliveries.
* **An entry on the wire is frozen.** Once ``begin()`` hands an entry to the transport it is
  not changed; a newer status queues behind it.
* **Never twice.** ``delivered()`` removes the entry for good; only the last delivered status
  per slug is kept (as the base for de-duplication). A transient failure (``retry()``) leaves
  the entry at the head; a final failure (``failed()``, e.g. a 400 from coderd) removes it and
  records the error, and the next entry proceeds.
* **Bounded.** At most ``max_pending`` entries per slug; beyond that the oldest waiting entry is
  dropped (its outcome says so). Outcomes of the last ``max_recent`` ids are remembered.
* **Durable.** ``to_doc()``/``from_doc()`` round-trip everything that matters across a restart
  (waiting entries, the last delivered and failed status, outcomes). An entry that was on the
  wire when the process died is waiting again after a restart (at-least-once: a crash between
  coderd's 200 and our write can repeat one status).

Validation mirrors coderd (coder-agent-http.md §5): ``message`` at most 160 bytes of UTF-8,
``state`` one of working/idle/complete/failure, ``app_slug`` non-empty and — once the manifest
is known — one of the agent's apps. Text with NUL or lone surrogates is refused too (coderd
would fail with a 500 that no retry can fix). The checks run in coderd's order; the first failure is
reported, naming its field.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "MAX_MESSAGE_BYTES",
    "STATES",
    "AppStatus",
    "AppStatusQueue",
    "Entry",
    "Invalid",
    "Ticket",
    "validate",
]

MAX_MESSAGE_BYTES = 160
STATES: tuple[str, ...] = ("working", "idle", "complete", "failure")
DEBOUNCE = 0.25
DOC_VERSION = 1

Delivery = Literal["pending", "delivered", "failed", "dropped"]


@dataclass(frozen=True)
class AppStatus:
    """One status as coderd stores it (the deprecated ``icon``/``needs_user_attention`` are not kept)."""

    app_slug: str
    state: str
    message: str = ""
    uri: str = ""

    def same(self, other: AppStatus) -> bool:
        return (self.state, self.message, self.uri) == (other.state, other.message, other.uri)

    def as_dict(self) -> dict[str, str]:
        return {"app_slug": self.app_slug, "state": self.state, "message": self.message, "uri": self.uri}


@dataclass(frozen=True)
class Invalid:
    """Why a request body was refused, as a codersdk.Response (status 400)."""

    message: str
    field: str
    detail: str

    def response(self) -> dict[str, Any]:
        return {"message": self.message, "validations": [{"field": self.field, "detail": self.detail}]}


def validate(body: Any, app_slugs: Iterable[str] | None = None) -> AppStatus | Invalid:
    """Check an agentsdk.PatchAppStatus body. ``app_slugs`` is None while the manifest is unknown."""
    if not isinstance(body, dict):
        return Invalid("Request body must be a JSON object.", "body", "expected an object")
    for name in ("app_slug", "state", "message", "uri", "icon"):
        v = body.get(name)
        if v is not None and not isinstance(v, str):
            return Invalid("Validation failed.", name, f"{name} must be a string")
        # Postgres text cannot hold NUL and lone surrogates cannot be encoded: coderd would answer
        # 500 (retried forever), so refuse them here where the caller can still fix them.
        if isinstance(v, str) and ("\x00" in v or not _encodable(v)):
            return Invalid("Validation failed.", name, f"{name} must be valid UTF-8 text without NUL characters")
    message = body.get("message") or ""
    size = len(message.encode("utf-8"))
    if size > MAX_MESSAGE_BYTES:
        return Invalid("Message is too long.", "message",
                       f"Message must be less than {MAX_MESSAGE_BYTES} characters "
                       f"(it is {size} bytes of UTF-8; at most {MAX_MESSAGE_BYTES} are allowed).")
    state = body.get("state")
    if state not in STATES:
        return Invalid("Invalid state provided.", "state",
                       f"invalid state provided: {state!r}; expected one of {', '.join(STATES)}")
    slug = body.get("app_slug") or ""
    if not slug.strip():
        return Invalid("Validation failed.", "app_slug", 'Validation failed for tag "required" with value: ""')
    if app_slugs is not None:
        known = sorted(set(app_slugs))
        if slug not in known:
            return Invalid("Failed to get workspace app.", "app_slug",
                           f"No app found with slug {slug!r}; this agent's apps are: "
                           f"{', '.join(known) if known else '(none)'}")
    return AppStatus(slug, state, message, body.get("uri") or "")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class Entry:
    """A status accepted locally. ``due`` is monotonic; the rest is persisted."""

    id: str
    seq: int
    status: AppStatus
    accepted_at: str
    due: float = 0.0
    in_flight: bool = False
    attempts: int = 0
    error: str = ""  # the last transient error while pending; the final error once failed
    finished_at: str = ""  # delivered_at / failed_at
    aliases: list[str] = field(default_factory=list)  # ids merged into this entry

    def to_doc(self) -> dict[str, Any]:
        return {"id": self.id, "seq": self.seq, "status": self.status.as_dict(), "accepted_at": self.accepted_at,
                "attempts": self.attempts, "error": self.error, "finished_at": self.finished_at,
                "aliases": list(self.aliases)}

    @classmethod
    def from_doc(cls, d: dict[str, Any], now: float) -> Entry:
        s = d["status"]
        return cls(
            id=str(d["id"]), seq=int(d["seq"]),
            status=AppStatus(str(s["app_slug"]), str(s["state"]), str(s.get("message", "")), str(s.get("uri", ""))),
            accepted_at=str(d.get("accepted_at", "")), due=now, attempts=int(d.get("attempts", 0)),
            error=str(d.get("error", "")), finished_at=str(d.get("finished_at", "")),
            aliases=[str(a) for a in d.get("aliases", [])],
        )


@dataclass(frozen=True)
class Ticket:
    """The answer to :meth:`AppStatusQueue.submit`: which entry carries the status, and how."""

    id: str
    delivery: Delivery
    coalesced: bool = False  # merged into a waiting entry of the same state
    duplicate: bool = False  # identical to the newest queued or delivered status: not queued again

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "delivery": self.delivery, "coalesced": self.coalesced, "duplicate": self.duplicate}


@dataclass
class _Slug:
    pending: list[Entry] = field(default_factory=list)
    delivered: Entry | None = None
    failed: Entry | None = None


class AppStatusQueue:
    def __init__(self, debounce: float = DEBOUNCE, max_pending: int = 100, max_recent: int = 256) -> None:
        if debounce < 0 or max_pending < 1 or max_recent < 1:
            raise ValueError("need debounce >= 0, max_pending >= 1, max_recent >= 1")
        self.debounce = debounce
        self.max_pending = max_pending
        self.max_recent = max_recent
        self._slugs: dict[str, _Slug] = {}
        self._recent: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._seq = 0
        self.flush = False  # when set, waiting entries are due at once (graceful stop)

    # accepting ----------------------------------------------------------------------------

    def submit(self, status: AppStatus, *, now: float, wall: str, new_id: str) -> Ticket:
        """Queue ``status`` (already validated) under ``new_id`` unless the rules above merge it."""
        q = self._slugs.setdefault(status.app_slug, _Slug())
        tail = q.pending[-1] if q.pending else None
        if tail is not None and tail.status.same(status):
            return Ticket(tail.id, "pending", duplicate=True)
        if tail is None and q.delivered is not None and q.delivered.status.same(status):
            return Ticket(q.delivered.id, "delivered", duplicate=True)
        if (tail is not None and not tail.in_flight and tail.status.state == status.state
                and (now < tail.due or tail.attempts > 0)):
            tail.status = status
            pred = q.pending[-2] if len(q.pending) >= 2 else None
            base = pred if pred is not None else q.delivered
            if base is not None and base.status.same(status):
                # The burst came back to where it started: nothing new to say.
                q.pending.pop()
                if pred is not None:
                    pred.aliases += [tail.id, *tail.aliases]
                    return Ticket(pred.id, "pending", duplicate=True)
                assert q.delivered is not None
                self._remember([tail.id, *tail.aliases], "delivered", q.delivered, "")
                return Ticket(q.delivered.id, "delivered", duplicate=True)
            return Ticket(tail.id, "pending", coalesced=True)
        self._seq += 1
        entry = Entry(new_id, self._seq, status, wall, due=now + self.debounce)
        q.pending.append(entry)
        self._trim(q)
        return Ticket(new_id, "pending")

    def _trim(self, q: _Slug) -> None:
        while len(q.pending) > self.max_pending:
            victim = next((e for e in q.pending if not e.in_flight), None)
            if victim is None:
                return
            q.pending.remove(victim)
            self._remember([victim.id, *victim.aliases], "dropped", None,
                           f"dropped: more than {self.max_pending} statuses waiting for this app")

    # sending ------------------------------------------------------------------------------

    def _heads(self) -> list[Entry]:
        return [q.pending[0] for q in self._slugs.values() if q.pending and not q.pending[0].in_flight]

    def next_due(self, now: float) -> Entry | None:
        """The entry to send now: the oldest due head of any slug, or None."""
        due = [e for e in self._heads() if self.flush or e.due <= now]
        return min(due, key=lambda e: e.seq) if due else None

    def next_wakeup(self) -> float | None:
        """When the next head becomes due (monotonic), or None when nothing waits."""
        heads = self._heads()
        return min(e.due for e in heads) if heads else None

    def pending_count(self) -> int:
        return sum(len(q.pending) for q in self._slugs.values())

    def begin(self, entry_id: str) -> AppStatus:
        """Mark the entry as on the wire; its content is frozen until ``retry``/``delivered``/``failed``."""
        e = self._head(entry_id)
        e.in_flight = True
        e.attempts += 1
        return e.status

    def retry(self, entry_id: str, error: str) -> None:
        """A transient failure: the entry stays at the head and is sent again later."""
        e = self._head(entry_id)
        e.in_flight = False
        e.error = error

    def delivered(self, entry_id: str, wall: str) -> None:
        e = self._pop(entry_id)
        e.error = ""
        e.finished_at = wall
        self._slugs[e.status.app_slug].delivered = e
        self._remember([e.id, *e.aliases], "delivered", e, "")

    def failed(self, entry_id: str, error: str, wall: str) -> None:
        """A final failure (coderd refused it): reported, never retried."""
        e = self._pop(entry_id)
        e.error = error
        e.finished_at = wall
        self._slugs[e.status.app_slug].failed = e
        self._remember([e.id, *e.aliases], "failed", e, error)

    def _head(self, entry_id: str) -> Entry:
        for q in self._slugs.values():
            if q.pending and q.pending[0].id == entry_id:
                return q.pending[0]
        raise KeyError(entry_id)

    def _pop(self, entry_id: str) -> Entry:
        e = self._head(entry_id)
        self._slugs[e.status.app_slug].pending.pop(0)
        e.in_flight = False
        return e

    def _remember(self, ids: list[str], delivery: Delivery, carrier: Entry | None, error: str) -> None:
        for i in ids:
            self._recent[i] = {
                "id": i, "delivery": delivery, "error": error,
                "carried_by": carrier.id if carrier else None,
                "status": carrier.status.as_dict() if carrier else None,
                "finished_at": carrier.finished_at if carrier else "",
            }
            self._recent.move_to_end(i)
        while len(self._recent) > self.max_recent:
            self._recent.popitem(last=False)

    # reporting ----------------------------------------------------------------------------

    def outcome(self, entry_id: str) -> dict[str, Any] | None:
        """Where the status accepted as ``entry_id`` stands, or None when the id is unknown."""
        for q in self._slugs.values():
            for e in q.pending:
                if e.id == entry_id or entry_id in e.aliases:
                    return {"id": entry_id, "delivery": "pending", "error": e.error, "carried_by": e.id,
                            "status": e.status.as_dict(), "finished_at": "", "attempts": e.attempts}
        for q in self._slugs.values():
            for f in (q.delivered, q.failed):
                if f is not None and (f.id == entry_id or entry_id in f.aliases):
                    return {"id": entry_id, "delivery": "delivered" if f is q.delivered else "failed",
                            "error": f.error, "carried_by": f.id, "status": f.status.as_dict(),
                            "finished_at": f.finished_at}
        found = self._recent.get(entry_id)
        return dict(found) if found is not None else None

    def snapshot(self) -> list[dict[str, Any]]:
        """The newest status per slug with its delivery state (pending/delivered/failed)."""
        out = []
        for _slug, q in sorted(self._slugs.items()):
            finals = [e for e in (q.delivered, q.failed) if e is not None]
            if q.pending:
                e, delivery = q.pending[-1], "pending"
            elif finals:
                e = max(finals, key=lambda x: x.seq)
                delivery = "delivered" if e is q.delivered else "failed"
            else:
                continue
            out.append({
                **e.status.as_dict(), "id": e.id, "accepted_at": e.accepted_at, "delivery": delivery,
                "error": q.pending[0].error if q.pending else e.error,
                "finished_at": e.finished_at if delivery != "pending" else "",
                "waiting": len(q.pending),
                "last_delivered": ({**q.delivered.status.as_dict(), "id": q.delivered.id,
                                    "delivered_at": q.delivered.finished_at} if q.delivered else None),
            })
        return out

    # persistence --------------------------------------------------------------------------

    def to_doc(self) -> dict[str, Any]:
        return {
            "version": DOC_VERSION,
            "seq": self._seq,
            "slugs": {
                slug: {"pending": [e.to_doc() for e in q.pending],
                       "delivered": q.delivered.to_doc() if q.delivered else None,
                       "failed": q.failed.to_doc() if q.failed else None}
                for slug, q in self._slugs.items()
            },
            "recent": list(self._recent.values()),
        }

    def load(self, doc: Any, now: float) -> None:
        """Restore from :meth:`to_doc` output. Waiting entries are due at ``now``.

        Raises ValueError (nothing changed) when the document is not one we wrote.
        """
        if not isinstance(doc, dict) or doc.get("version") != DOC_VERSION:
            raise ValueError("not an app-status document of this version")
        try:
            slugs: dict[str, _Slug] = {}
            for slug, d in dict(doc.get("slugs") or {}).items():
                q = _Slug(pending=[Entry.from_doc(e, now) for e in d.get("pending") or []])
                q.delivered = Entry.from_doc(d["delivered"], now) if d.get("delivered") else None
                q.failed = Entry.from_doc(d["failed"], now) if d.get("failed") else None
                slugs[str(slug)] = q
            recent: OrderedDict[str, dict[str, Any]] = OrderedDict(
                (str(r["id"]), dict(r)) for r in doc.get("recent") or [])
            seq = int(doc.get("seq", 0))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"malformed app-status document: {e}") from None
        self._slugs, self._recent = slugs, recent
        self._seq = max([seq, *(e.seq for q in slugs.values() for e in q.pending)])
