"""The Docker engine through the ``docker`` SDK: blocking calls, run from threads by the manager.

Rules:

* ``docker`` is imported here only, when the feature starts (the idle daemon stays light).
* The engine is found like the docker CLI finds it: ``DOCKER_HOST`` (and ``DOCKER_TLS_VERIFY``,
  ``DOCKER_CERT_PATH``), else ``unix:///var/run/docker.sock``.
* Any failure to reach the engine raises :class:`EngineUnavailable` with a one-line reason
  ("permission denied", "no such file", "connection refused"); the caller reports it.
* Listing = one ``GET /containers/json?all=1`` plus an inspect for each container whose
  (id, state) the cache has not seen; events drop cache entries. Steady state is one request.
* The events stream has its own client (its connection blocks for ever); ``close_events()``
  from another thread ends the reader.
* The SDK recreate keeps the old container (renamed) until the new one runs, then removes it;
  on failure the old one gets its name back.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["Engine", "EngineUnavailable", "describe_error"]

EVENTS = ["create", "start", "die", "destroy", "rename", "pause", "unpause", "update", "restart"]
TIMEOUT = 15.0


class EngineUnavailable(Exception):
    """The engine cannot be reached; ``str()`` is the reason for status and warnings."""


def host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def describe_error(e: BaseException) -> str:
    """A short reason from the SDK's nested exceptions (requests/urllib3/OSError)."""
    seen: set[int] = set()
    stack: list[BaseException] = [e]
    while stack:
        cur = stack.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.strerror:
            return str(cur.strerror).lower()
        stack.extend(a for a in getattr(cur, "args", ()) if isinstance(a, BaseException))
        for nxt in (cur.__cause__, cur.__context__):
            if nxt is not None:
                stack.append(nxt)
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]


def _is_connection_error(e: BaseException) -> bool:
    import requests

    return isinstance(e, requests.exceptions.ConnectionError | requests.exceptions.Timeout | OSError)


class Engine:
    def __init__(self) -> None:
        self._client: Any = None
        self._events_client: Any = None
        self._events_stream: Any = None
        self._cache: dict[str, tuple[str, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.version = ""

    # connection ------------------------------------------------------------------------

    def connect(self) -> None:
        """(Re)connect and ping; raises EngineUnavailable.

        A unix socket that does not exist is answered without importing the SDK: on the many
        machines without an engine the feature then costs nothing (bench.logs_rss: the SDK's RSS),
        and the first retry after an engine appears loads it."""
        self.close()
        where = host()
        if where.startswith("unix://") and not os.path.exists(where[len("unix://"):]):
            raise EngineUnavailable(f"cannot reach the Docker engine at {where}: no such file or directory")
        import docker

        try:
            client = docker.from_env(timeout=int(TIMEOUT))
            client.ping()
            self.version = str(client.version().get("Version", ""))
        except Exception as e:  # the SDK raises many kinds; all mean "not usable now"
            raise EngineUnavailable(f"cannot reach the Docker engine at {where}: {describe_error(e)}") from None
        self._client = client
        with self._lock:
            self._cache.clear()

    def close(self) -> None:
        self.close_events()
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def _api(self) -> Any:
        if self._client is None:
            raise EngineUnavailable("not connected to the Docker engine")
        return self._client.api

    def _wrap(self, e: BaseException) -> BaseException:
        if _is_connection_error(e):
            return EngineUnavailable(f"lost the Docker engine at {host()}: {describe_error(e)}")
        return e

    # listing ---------------------------------------------------------------------------

    def forget(self, container_id: str) -> None:
        with self._lock:
            self._cache.pop(container_id, None)

    def list_inspect(self) -> list[dict[str, Any]]:
        """Inspect data of every container (cached by id and state)."""
        import docker

        api = self._api()
        try:
            rows = api.containers(all=True)
        except Exception as e:
            raise self._wrap(e) from None
        keep: dict[str, tuple[str, dict[str, Any]]] = {}
        misses: list[tuple[str, str]] = []
        for row in rows:
            cid, key = str(row.get("Id")), str(row.get("State"))
            with self._lock:
                hit = self._cache.get(cid)
            if hit is not None and hit[0] == key:
                keep[cid] = hit
            else:
                misses.append((cid, key))

        def inspect(cid: str) -> dict[str, Any] | None:
            try:
                return dict(api.inspect_container(cid))
            except docker.errors.NotFound:
                return None  # removed between list and inspect

        try:
            if len(misses) > 2:  # a cold cache: inspect in parallel (one request each)
                with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
                    found = list(pool.map(inspect, [cid for cid, _ in misses]))
            else:
                found = [inspect(cid) for cid, _ in misses]
        except Exception as e:
            raise self._wrap(e) from None
        for (cid, key), data in zip(misses, found, strict=True):
            if data is not None:
                keep[cid] = (key, data)
        out = [keep[str(r.get("Id"))][1] for r in rows if str(r.get("Id")) in keep]
        with self._lock:
            self._cache = keep
        return out

    # events ----------------------------------------------------------------------------

    def events(self) -> Iterator[dict[str, Any]]:
        """Container events until the stream ends; raises EngineUnavailable when it breaks."""
        import docker

        try:
            self._events_client = docker.from_env(timeout=int(TIMEOUT))
            # no read timeout on the stream: events can be minutes apart
            stream = self._events_client.api.events(
                decode=True, filters={"type": "container", "event": EVENTS})
        except Exception as e:
            raise EngineUnavailable(f"cannot follow Docker engine events: {describe_error(e)}") from None
        self._events_stream = stream
        try:
            yield from stream
        except Exception as e:
            raise EngineUnavailable(f"lost Docker engine events: {describe_error(e)}") from None

    def close_events(self) -> None:
        stream, self._events_stream = self._events_stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        client, self._events_client = self._events_client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    # actions ---------------------------------------------------------------------------

    def stop(self, container_id: str, timeout: int = 10) -> None:
        import docker

        try:
            self._api().stop(container_id, timeout=timeout)
        except docker.errors.NotFound:
            return
        except Exception as e:
            raise self._wrap(e) from None

    def remove(self, container_id: str) -> None:
        import docker

        try:
            self._api().remove_container(container_id, force=True, v=False)
        except docker.errors.NotFound:
            return
        except Exception as e:
            raise self._wrap(e) from None

    def recreate_from_inspect(self, container_id: str) -> tuple[str, str]:
        """New container from the old one's inspect data; returns (new id, name)."""
        import docker

        api = self._api()
        try:
            old = api.inspect_container(container_id)
            name = str(old.get("Name") or "").lstrip("/")
            config = _create_config(old)
            tmp = f"{name}-old-{container_id[:12]}" if name else ""
            if tmp:
                api.rename(container_id, tmp)
            try:
                api.stop(container_id, timeout=10)
                new = api.create_container_from_config(config, name=name or None)
                new_id = str(new["Id"])
                try:
                    api.start(new_id)
                except Exception:
                    api.remove_container(new_id, force=True)
                    raise
            except Exception:
                if tmp:
                    try:
                        api.rename(container_id, name)
                        if (old.get("State") or {}).get("Running"):
                            api.start(container_id)
                    except docker.errors.APIError:
                        pass
                raise
            api.remove_container(container_id, force=True)
            return new_id, name
        except Exception as e:
            raise self._wrap(e) from None


def _create_config(old: dict[str, Any]) -> dict[str, Any]:
    """The create request that reproduces a container: its Config and HostConfig as inspected.

    Image, labels, env, cmd, entrypoint, working dir, user, exposed ports, binds/mounts, port
    bindings, restart policy, init, capabilities... all travel in these two documents. The
    hostname is dropped so the new container gets its own (it defaults to the container id).
    """
    cfg = {k: v for k, v in (old.get("Config") or {}).items() if k not in ("Hostname",)}
    host_config = dict(old.get("HostConfig") or {})
    cfg["HostConfig"] = host_config
    nets = (old.get("NetworkSettings") or {}).get("Networks") or {}
    mode = str(host_config.get("NetworkMode") or "")
    if mode in nets and mode not in ("bridge", "default", "host", "none"):
        short = str(old.get("Id") or "")[:12]
        ep = nets[mode] or {}
        cfg["NetworkingConfig"] = {"EndpointsConfig": {mode: {
            "Aliases": [a for a in ep.get("Aliases") or [] if a != short],
            **({"IPAMConfig": ep["IPAMConfig"]} if ep.get("IPAMConfig") else {}),
        }}}
    return cfg
