"""The Dev Containers CLI output parser (lines recorded from @devcontainers/cli 0.89)."""

from coder_agent.devcontainers.cliparse import parse_log_line, parse_result


def test_info_and_raw_lines_are_user_visible_and_cleaned() -> None:
    recs = parse_log_line('{"type":"raw","level":3,"timestamp":1,"text":"\\u001b[1mRunning the postCreateCommand'
                          ' from devcontainer.json...\\u001b[0m\\r\\n\\r\\n"}')
    assert [(r.level, r.text, r.user_visible) for r in recs] == [
        ("info", "Running the postCreateCommand from devcontainer.json...", True)]


def test_debug_lines_are_not_user_visible_and_progress_is_dropped() -> None:
    assert parse_log_line('{"type":"start","level":2,"timestamp":1,"text":"Run: docker -v"}')[0].user_visible is False
    assert parse_log_line('{"type":"progress","name":"x","status":"running"}') == []
    assert parse_log_line('{"type":"text","level":2,"timestamp":1,"text":""}') == []


def test_error_level_and_plain_text() -> None:
    assert parse_log_line('{"type":"text","level":5,"text":"boom"}')[0].level == "error"
    assert [r.text for r in parse_log_line("not json\r\n")] == ["not json"]


def test_result_success() -> None:
    r = parse_result(['{"outcome":"success","containerId":"abc","remoteUser":"root"}'], 0)
    assert (r.ok, r.container_id, r.error) == (True, "abc", "")


def test_result_error_without_container_is_a_failure_with_the_message() -> None:
    r = parse_result(['{"outcome":"error","message":"Dev container config (/x) is missing one of \\"image\\"",'
                      '"description":"An error occurred setting up the container."}'], 1)
    assert not r.ok
    assert "is missing one of" in r.error


def test_result_error_with_container_is_a_lifecycle_failure() -> None:
    r = parse_result(['{"outcome":"error","containerId":"abc","message":"postCreateCommand failed"}'], 1)
    assert r.ok and r.container_id == "abc" and r.error == "postCreateCommand failed"


def test_no_result_line() -> None:
    r = parse_result(["garbage"], 137, "killed")
    assert not r.ok and "137" in r.error and "killed" in r.error
