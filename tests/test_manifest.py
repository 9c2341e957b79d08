"""The typed manifest and its feed: the model is exactly the converted dict, and subscribers hear
of every new manifest (first connect, reconnect, reinit)."""

from __future__ import annotations

import json

import pytest
from structlog.testing import capture_logs

from coder_agent.agentrpc.manifest import convert, redacted
from coder_agent.feed import Feed
from coder_agent.manifest import Manifest

from .agentrpc.test_pure import _manifest


def test_the_model_is_the_converted_dict_field_for_field() -> None:
    d = convert(_manifest(), env={"HOME": "/home/alice"}, home="/home/alice").manifest
    m = Manifest.model_validate(d)
    assert m.model_dump() == d
    assert list(m.model_dump()) == list(d)  # same keys in the same order
    # GET /api/v0/manifest: byte for byte what the dict view gave
    assert json.dumps(m.local_view()) == json.dumps(redacted(d))
    assert m.app_slugs() == ["web"] and m.scripts[0].timeout == 90.0 and m.metadata[0].interval == 5
    assert "s3cret" not in m.model_dump_json()


def test_a_partial_manifest_parses_and_the_model_is_frozen() -> None:
    m = Manifest.model_validate({"apps": [{"slug": "claude-code"}]})
    assert m.app_slugs() == ["claude-code"] and m.workspace_id == ""
    with pytest.raises(ValueError):
        m.agent_name = "x"


def test_subscribers_hear_every_manifest_and_the_clear() -> None:
    feed: Feed[Manifest] = Feed("manifest")
    seen: list[Manifest | None] = []
    unsubscribe = feed.subscribe(seen.append)
    assert seen == [] and feed.latest is None  # nothing known: nothing replayed
    first, again = Manifest(agent_name="a"), Manifest(agent_name="b")
    feed.publish(first)
    feed.publish(again)  # a reconnect: the same or a newer manifest, told again
    feed.clear()  # a reinit: nothing known until the new session's manifest
    feed.clear()  # told once
    assert seen == [first, again, None] and feed.latest is None
    feed.publish(first)
    late: list[Manifest | None] = []
    feed.subscribe(late.append)
    assert late == [first]  # a late subscriber gets the current manifest at once
    unsubscribe()
    feed.publish(again)
    assert seen == [first, again, None, first] and late == [first, again]


def test_a_failing_subscriber_does_not_stop_the_others() -> None:
    feed: Feed[Manifest] = Feed("manifest")
    seen: list[Manifest | None] = []

    def broken(m: Manifest | None) -> None:
        raise RuntimeError("boom")

    feed.subscribe(broken)
    feed.subscribe(seen.append)
    with capture_logs() as logs:
        feed.publish(Manifest())
    assert seen == [Manifest()]
    assert any(e["event"] == "subscriber failed" and e["feed"] == "manifest" for e in logs)
