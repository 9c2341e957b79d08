"""The pure parts of the tunnel's services: Go's list-directory shape and the speedtest config."""

from __future__ import annotations

import json
from pathlib import Path

from coder_agent.tailnet.httpapi import list_directory
from coder_agent.tailnet.speedtest import parse_config


def test_list_directory_as_go_handle_ls(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "c").mkdir()
    status, body = list_directory({"path": [tmp_path.name], "relativity": "home"}, home=str(tmp_path.parent))
    assert status == 200
    assert body["absolute_path_string"] == str(tmp_path)
    assert body["absolute_path"] == list(tmp_path.parts[1:])
    assert [(e["name"], e["is_dir"]) for e in body["contents"]] == [("b", True), ("c", True), ("a.txt", False)]
    assert body["contents"][2]["absolute_path_string"] == str(tmp_path / "a.txt")
    status, body = list_directory({"path": [], "relativity": "root"})
    assert status == 200 and body["absolute_path"] == [] and body["absolute_path_string"] == "/"
    assert list_directory({"path": ["nope"], "relativity": "home"}, home=str(tmp_path))[0] == 404
    # Go answers these two with 500; bad input is a 400 here, as everywhere on the local API
    assert list_directory({"path": ["a.txt"], "relativity": "home"}, home=str(tmp_path))[0] == 400
    assert list_directory({"path": [], "relativity": "elsewhere"})[0] == 400
    assert list_directory({"path": [1], "relativity": "root"})[0] == 400
    assert list_directory({"path": ["a\0b"], "relativity": "root"})[0] == 400


def test_speedtest_config() -> None:
    assert parse_config(json.dumps({"version": 2, "time": 5_000_000_000, "direction": 1}).encode()) == (1, 5.0)
    assert parse_config(json.dumps({"version": 2, "time": 10**12, "direction": 0}).encode()) == (0, 30.0)
    err = parse_config(json.dumps({"version": 1, "time": 1, "direction": 0}).encode())
    assert isinstance(err, str) and "version mismatch" in err
    assert isinstance(parse_config(b"{not json"), str)
    assert isinstance(parse_config(json.dumps({"version": 2, "time": 1, "direction": 7}).encode()), str)
