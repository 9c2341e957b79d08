"""Against the real Docker engine and the real Dev Containers CLI (in-process manager behind a
real local API socket). Containers are ours only: labelled with a per-test tag, removed after."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from coder_agent.devcontainers.manager import CLI_MISSING

from ..conftest import apoll, t
from .conftest import IMAGE, TEST_LABEL, git_repo
from .dockerproxy import DockerProxy

pytestmark = pytest.mark.docker

CFG = json.dumps({"image": IMAGE, "postCreateCommand": "echo post-create-ran"})


async def get(h: Any, **params: Any) -> dict[str, Any]:
    r = await h.http.get("/api/v0/containers", params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_list_with_label_filters(harness: Any, run_container: Any, tag: str) -> None:
    a = run_container("a", {"role": "web", "tier": "x"}, ports={"80/tcp": ("127.0.0.1", None)})
    run_container("b", {"role": "db"}, start=False)
    h = await harness()
    await apoll(lambda: len(h.mine(h.mgr.response(), tag)) == 2, 10)
    doc = await get(h)
    mine = {c["name"]: c for c in h.mine(doc, tag)}
    assert mine[f"{tag}-a"]["running"] is True and mine[f"{tag}-a"]["status"] == "running"
    assert mine[f"{tag}-a"]["ports"][0]["port"] == 80 and mine[f"{tag}-a"]["ports"][0]["host_ip"] == "127.0.0.1"
    assert mine[f"{tag}-b"]["running"] is False
    only = await h.http.get("/api/v0/containers", params=[("label", f"{TEST_LABEL}={tag}"), ("label", "role=web")])
    assert [c["id"] for c in only.json()["containers"]] == [a.id]
    bad = await h.http.get("/api/v0/containers", params={"label": "novalue"})
    assert bad.status_code == 400 and bad.json()["message"] == "Invalid label filter."


async def test_discovery_lists_a_git_project_and_skips_an_ignored_one(harness: Any, short_tmp: Path) -> None:
    ws = short_tmp / "ws"
    repo = git_repo(ws / "proj", {".devcontainer/devcontainer.json": CFG, "vendor/lib/.devcontainer.json": CFG},
                    gitignore="vendor/\n")
    h = await harness(ws)
    await apoll(lambda: h.dc(h.mgr.response(), repo), 10)
    doc = await get(h)
    d = h.dc(doc, repo)
    assert d is not None and d["status"] == "stopped" and d["name"] == "proj"
    assert d["config_path"] == f"{repo}/.devcontainer/devcontainer.json"
    assert h.dc(doc, repo / "vendor" / "lib") is None


async def test_recreate_with_the_cli_keeps_the_id_and_streams_logs(harness: Any, short_tmp: Path, tag: str) -> None:
    ws = short_tmp / "ws"
    repo = git_repo(ws / "proj", {".devcontainer/devcontainer.json": CFG})
    h = await harness(ws)
    d = await apoll(lambda: h.dc(h.mgr.response(), repo), 10)
    dc_id = d["id"]

    r = await h.http.post(f"/api/v0/containers/devcontainers/{dc_id}/recreate")
    assert r.status_code == 202 and r.json()["message"] == "Devcontainer recreation initiated"
    assert h.dc(h.mgr.response(), repo)["status"] == "starting"
    again = await h.http.post(f"/api/v0/containers/devcontainers/{dc_id}/recreate")
    assert again.status_code == 409
    gone = await h.http.delete(f"/api/v0/containers/devcontainers/{dc_id}")
    assert gone.status_code == 409

    first = await apoll(lambda: (x := h.dc(h.mgr.response(), repo)) and x["status"] == "running" and x, 60)
    assert first["id"] == dc_id and first["container"]["labels"]["devcontainer.local_folder"] == str(repo)
    assert "post-create-ran" in h.lines()
    old_container = first["container"]["id"]

    r = await h.http.post(f"/api/v0/containers/devcontainers/{dc_id}/recreate")
    assert r.status_code == 202
    second = await apoll(lambda: (x := h.dc(h.mgr.response(), repo)) and x["status"] == "running" and x, 60)
    assert second["id"] == dc_id
    assert second["container"]["id"] != old_container
    assert second["dirty"] is False and not second.get("error")
    src = {ln.source.display_name for ln in h.sink.lines}
    assert src == {"devcontainer proj"}

    missing = await h.http.post("/api/v0/containers/devcontainers/nope/recreate")
    assert missing.status_code == 404 and missing.json()["message"] == "Devcontainer not found."


async def test_failing_devcontainer_json_reports_the_cli_message(harness: Any, short_tmp: Path) -> None:
    ws = short_tmp / "ws"
    repo = git_repo(ws / "bad", {".devcontainer/devcontainer.json": '{"name": "no image here"}'})
    h = await harness(ws)
    d = await apoll(lambda: h.dc(h.mgr.response(), repo), 10)
    r = await h.http.post(f"/api/v0/containers/devcontainers/{d['id']}/recreate")
    assert r.status_code == 202
    failed = await apoll(lambda: (x := h.dc(h.mgr.response(), repo)) and x["status"] == "error" and x, 30)
    assert 'is missing one of "image"' in failed["error"]
    assert any(ln.level == "error" for ln in h.sink.lines)


async def test_delete_stops_then_removes(harness: Any, run_container: Any, docker_client: Any, tag: str,
                                         short_tmp: Path) -> None:
    folder = str(short_tmp / "ws" / "lab")
    c = run_container("dev", {"devcontainer.local_folder": folder})
    h = await harness()
    d = await apoll(lambda: h.dc(h.mgr.response(), folder), 10)
    assert d["status"] == "running" and d["container"]["id"] == c.id
    seen: list[str] = []

    async def watch_statuses() -> None:
        gen = h.mgr.generation
        while True:
            gen = await h.mgr.wait_change(gen)
            x = h.dc(h.mgr.response(), folder)
            st = x["status"] if x else "removed"
            if not seen or seen[-1] != st:  # a scan during "stopping" republishes it
                seen.append(st)

    w = asyncio.create_task(watch_statuses())
    r = await h.http.delete(f"/api/v0/containers/devcontainers/{d['id']}")
    assert r.status_code == 204
    await asyncio.sleep(0.1)
    w.cancel()
    assert seen == ["stopping", "deleting", "removed"], seen
    assert not [x for x in docker_client.containers.list(all=True, sparse=True) if x.id == c.id]
    assert (await h.http.delete(f"/api/v0/containers/devcontainers/{d['id']}")).status_code == 404


async def test_dirty_when_the_config_changes(harness: Any, run_container: Any, short_tmp: Path) -> None:
    folder = short_tmp / "ws" / "dirty"
    cfg = folder / ".devcontainer" / "devcontainer.json"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(CFG)
    os.utime(cfg, (1_000_000_000, 1_000_000_000))
    run_container("d", {"devcontainer.local_folder": str(folder), "devcontainer.config_file": str(cfg)})
    h = await harness()
    d = await apoll(lambda: h.dc(h.mgr.response(), folder), 10)
    assert d["dirty"] is False
    cfg.write_text(CFG.replace("post-create-ran", "changed"))
    await apoll(lambda: h.dc(h.mgr.response(), folder)["dirty"], 10)


async def test_watch_pushes_on_create_stop_and_remove(harness: Any, run_container: Any, tag: str) -> None:
    h = await harness()
    path = h.address[5:]
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as s, \
            s.ws_connect("http://agent/api/v0/containers/watch") as ws:

        async def until(pred: Any) -> dict[str, Any]:
            async with asyncio.timeout(t(15)):
                while True:
                    msg = await ws.receive()
                    assert msg.type == aiohttp.WSMsgType.TEXT, msg
                    doc = json.loads(msg.data)
                    if pred(h.mine(doc, tag)):
                        return dict(doc)

        first = json.loads((await ws.receive(timeout=t(10))).data)
        assert set(first) == {"containers", "devcontainers", "warnings"}
        c = run_container("w")
        await until(lambda mine: len(mine) == 1 and mine[0]["running"])
        await asyncio.to_thread(c.stop, timeout=5)
        await until(lambda mine: len(mine) == 1 and not mine[0]["running"])
        await asyncio.to_thread(c.remove)
        await until(lambda mine: mine == [])


async def test_engine_gone_and_back(harness: Any, run_container: Any, tag: str, short_tmp: Path,
                                    monkeypatch: Any) -> None:
    proxy = DockerProxy(str(short_tmp / "docker.sock"))
    proxy.start()
    monkeypatch.setenv("DOCKER_HOST", proxy.docker_host)
    run_container("e")
    h = await harness()
    await apoll(lambda: len(h.mine(h.mgr.response(), tag)) == 1, 10)
    assert h.mgr.health.state == "ok"

    proxy.stop()
    await apoll(lambda: h.mgr.health.state == "unavailable", 15)
    doc = await get(h)
    assert doc["containers"] == []
    assert any(w.startswith("Docker engine unavailable:") and "docker.sock" in w for w in doc["warnings"])
    assert h.mgr.status()["state"] == "unavailable"

    proxy.start()
    await apoll(lambda: h.mgr.health.state == "ok", 20)
    doc = await get(h)
    assert len(h.mine(doc, tag)) == 1
    assert not any("unavailable" in w for w in doc["warnings"])
    proxy.stop()


async def test_without_the_cli_recreate_goes_through_the_engine(harness: Any, run_container: Any,
                                                                 docker_client: Any, tag: str,
                                                                 short_tmp: Path) -> None:
    folder = str(short_tmp / "ws" / "nocli")
    c = run_container("nocli", {"devcontainer.local_folder": folder, "extra": "kept"},
                      environment={"FOO": "bar"}, ports={"8080/tcp": ("127.0.0.1", None)},
                      volumes={str(short_tmp): {"bind": "/host", "mode": "ro"}})
    h = await harness(CODER_AGENT_DEVCONTAINERS_CLI=str(short_tmp / "no-such-devcontainer"))
    d = await apoll(lambda: h.dc(h.mgr.response(), folder), 10)
    assert CLI_MISSING in (await get(h))["warnings"]
    r = await h.http.post(f"/api/v0/containers/devcontainers/{d['id']}/recreate")
    assert r.status_code == 202 and "lifecycle commands will not run" in r.json()["detail"]
    done = await apoll(lambda: (x := h.dc(h.mgr.response(), folder)) and x["status"] != "starting" and x, 30)
    assert done["status"] == "running", done
    new = done["container"]
    assert new["id"] != c.id and new["name"] == c.name and done["id"] == d["id"]
    assert new["labels"]["extra"] == "kept"
    assert new["volumes"] == {str(short_tmp): "/host"}
    assert new["ports"][0]["port"] == 8080
    env = docker_client.api.inspect_container(new["id"])["Config"]["Env"]
    assert "FOO=bar" in env
    assert any("did NOT run" in ln for ln in h.lines())
    assert not [x for x in docker_client.containers.list(all=True, sparse=True) if x.id == c.id]


async def test_manifest_devcontainers_keep_their_id_and_sub_agents_get_403(harness: Any, short_tmp: Path) -> None:
    folder = short_tmp / "ws" / "tf"
    manifest: dict[str, Any] = {"devcontainers": [
        {"id": "8a3c4a52-5b7e-4bd6-9d2b-1f7c2a6e9b10", "workspace_folder": str(folder),
         "config_path": ".devcontainer/devcontainer.json", "name": "from-terraform"}]}
    h = await harness(manifest=manifest)
    d = await apoll(lambda: h.dc(h.mgr.response(), folder), 10)
    assert (d["id"], d["name"], d["status"]) == ("8a3c4a52-5b7e-4bd6-9d2b-1f7c2a6e9b10", "from-terraform", "stopped")
    assert d["config_path"] == f"{folder}/.devcontainer/devcontainer.json"
    manifest["parent_id"] = "5c0f8d9e-1111-4a2b-8c3d-123456789abc"
    r = await h.http.get("/api/v0/containers")
    assert r.status_code == 403 and r.json()["message"] == "Dev Container feature not supported."
