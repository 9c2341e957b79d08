"""The reinit payload and the exactly-once decision, pure."""

from __future__ import annotations

import pytest

from coder_agent.errors import ProtocolError
from coder_agent.reinit.claim import Claim, Verdict, decide, parse_claim

WS = "2b4b7c2e-8f1e-4c57-9d0b-1f8a5e2c3d4e"
OWNER = "9a1e4f0c-5b6d-4e7f-8a9b-0c1d2e3f4a5b"


def test_parse_new_and_legacy_keys() -> None:
    new = parse_claim(f'{{"workspace_id":"{WS}","reason":"prebuild_claimed","owner_id":"{OWNER}"}}')
    old = parse_claim(f'{{"workspaceID":"{WS.upper()}","reason":"prebuild_claimed","owner_id":"{OWNER}"}}')
    assert new == old == Claim(WS, "prebuild_claimed", OWNER)


def test_owner_omitted_or_zero_reads_as_empty() -> None:
    assert parse_claim(f'{{"workspace_id":"{WS}","reason":"prebuild_claimed"}}').owner_id == ""
    zero = "00000000-0000-0000-0000-000000000000"
    assert parse_claim(f'{{"workspace_id":"{WS}","reason":"r","owner_id":"{zero}"}}').owner_id == ""


@pytest.mark.parametrize("data", ["", "not json", "[]", "null", '{"reason":"prebuild_claimed"}',
                                  '{"workspace_id": 5}', '{"workspace_id": ""}'])
def test_bad_payloads_are_protocol_errors(data: str) -> None:
    with pytest.raises(ProtocolError):
        parse_claim(data)


def test_decide() -> None:
    c = Claim(WS, "prebuild_claimed", OWNER)
    assert decide(c, None, None) is Verdict.REINIT
    assert decide(c, {"workspace_id": WS, "owner_id": OWNER}, None) is Verdict.DUPLICATE
    assert decide(c, {"workspace_id": WS.upper(), "owner_id": OWNER, "handled_at": "x"}, WS) is Verdict.DUPLICATE
    # a new owner is a new claim; so is another workspace's record (state dir reused)
    assert decide(c, {"workspace_id": WS, "owner_id": "other"}, None) is Verdict.REINIT
    assert decide(c, {"workspace_id": "other-ws", "owner_id": OWNER}, None) is Verdict.REINIT
    # a corrupt record never blocks a claim
    assert decide(c, ["junk"], None) is Verdict.REINIT
    assert decide(c, {"workspace_id": 5}, None) is Verdict.REINIT
    assert decide(Claim(WS, "upgrade", OWNER), None, None) is Verdict.UNKNOWN_REASON
    assert decide(Claim(WS, "", OWNER), None, None) is Verdict.UNKNOWN_REASON
    assert decide(c, None, "another-ws") is Verdict.OTHER_WORKSPACE
    assert decide(c, None, WS.upper()) is Verdict.REINIT


def test_record_round_trips_through_decide() -> None:
    c = Claim(WS, "prebuild_claimed", "")
    assert decide(c, c.record(), WS) is Verdict.DUPLICATE
