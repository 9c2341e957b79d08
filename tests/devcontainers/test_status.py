"""The status table, without an event loop."""

import pytest

from coder_agent.devcontainers.status import TABLE, TRANSITIONAL, Event, Refused, Status, next_status, observation


@pytest.mark.parametrize("state", sorted(TRANSITIONAL))
@pytest.mark.parametrize("event", [Event.RECREATE, Event.DELETE])
def test_transitional_states_refuse_new_jobs(state: Status, event: Event) -> None:
    with pytest.raises(Refused):
        next_status(state, event)


@pytest.mark.parametrize("state", sorted(TRANSITIONAL))
def test_scans_never_move_a_transitional_state(state: Status) -> None:
    for ev in (Event.OBSERVED_RUNNING, Event.OBSERVED_STOPPED, Event.OBSERVED_RUNNING_NEW, Event.OBSERVED_STOPPED_NEW):
        assert next_status(state, ev) is state


def test_recreate_path() -> None:
    s = next_status(Status.STOPPED, Event.RECREATE)
    assert s is Status.STARTING
    assert next_status(s, Event.RECREATE_DONE) is Status.RUNNING
    assert next_status(s, Event.RECREATE_FAILED) is Status.ERROR


def test_delete_path_has_no_way_back() -> None:
    s = next_status(Status.RUNNING, Event.DELETE)
    assert s is Status.STOPPING
    s = next_status(s, Event.STOP_DONE)
    assert s is Status.DELETING
    assert Status.STOPPING not in TABLE[Status.DELETING].values()
    assert Status.STARTING not in TABLE[Status.DELETING].values()
    assert next_status(s, Event.REMOVE_DONE) is Status.REMOVED
    assert TABLE[Status.REMOVED] == {}
    with pytest.raises(Refused):
        next_status(Status.DELETING, Event.RECREATE_DONE)


def test_error_is_sticky_until_a_newer_container() -> None:
    assert next_status(Status.ERROR, observation(True, False)) is Status.ERROR
    assert next_status(Status.ERROR, observation(False, False)) is Status.ERROR
    assert next_status(Status.ERROR, observation(True, True)) is Status.RUNNING
    assert next_status(Status.ERROR, Event.RECREATE) is Status.STARTING


def test_every_state_has_a_row() -> None:
    assert set(TABLE) == set(Status)
