"""Discovery of devcontainer.json in git projects (real git, no engine)."""

from pathlib import Path

from coder_agent.devcontainers.discovery import discover, projects_from_paths

from .conftest import git_repo


def test_projects_from_paths() -> None:
    paths = [".devcontainer/devcontainer.json", "sub/.devcontainer.json", "x/devcontainer.json",
             "a/b/.devcontainer/devcontainer.json"]
    assert projects_from_paths("/r", paths) == [
        ("/r", "/r/.devcontainer/devcontainer.json"),
        ("/r/a/b", "/r/a/b/.devcontainer/devcontainer.json"),
        ("/r/sub", "/r/sub/.devcontainer.json"),
    ]


def test_discover_honours_gitignore_and_walks_subdirectories(short_tmp: Path) -> None:
    ws = short_tmp / "home"
    cfg = '{"image": "local/busybox:latest"}'
    git_repo(ws / "repo1", {".devcontainer/devcontainer.json": cfg, "ignored/.devcontainer.json": cfg,
                            "tools/.devcontainer.json": cfg}, gitignore="ignored/\n")
    (ws / "notgit" / ".devcontainer").mkdir(parents=True)
    (ws / "notgit" / ".devcontainer" / "devcontainer.json").write_text(cfg)
    found, warnings = discover(ws)
    r = ws / "repo1"
    assert found == [(str(r), f"{r}/.devcontainer/devcontainer.json"), (f"{r}/tools", f"{r}/tools/.devcontainer.json")]
    assert warnings == []
    # the directory itself a repo: only it is walked
    assert discover(r)[0] == found
