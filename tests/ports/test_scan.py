"""The scanner against real listeners in child processes (real /proc, real psutil)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from coder_agent.ports.scan import (
    OwnerCache,
    ProcNetReader,
    PsutilReader,
    ReaderUnavailable,
    ScanError,
    Scanner,
    default_scanner,
)
from coder_agent.ports.select import Listener, ListeningPort, select_ports

from .conftest import Listeners, is_root

V4 = {"family": 4, "host": "0.0.0.0"}
V6ONLY = {"family": 6, "host": "::", "v6only": True}
DUAL = {"family": 6, "host": "::", "v6only": False}
LO4 = {"family": 4, "host": "127.0.0.1"}
LO6 = {"family": 6, "host": "::1", "v6only": True}


def ours(scanner: Scanner, ports: list[int], exclude: set[int] | None = None) -> list[ListeningPort]:
    """What a scan reports about ``ports`` (other people's listeners on this host are ignored)."""
    return [p for p in select_ports(scanner.scan().listeners, exclude=exclude or set()) if p.port in ports]


def test_every_kind_of_listener_exactly(listen: Callable[..., Listeners]) -> None:
    ln = listen([V4, V6ONLY, DUAL, LO4, LO6], name="ca-kinds")
    p4, p6, pdual, plo4, plo6 = ln.ports
    assert ours(default_scanner(), ln.ports) == sorted([
        ListeningPort(p4, "ca-kinds"),
        ListeningPort(p6, "ca-kinds"),  # the Go agent missed this one (tcp6 only)
        ListeningPort(pdual, "ca-kinds"),
        ListeningPort(plo4, "ca-kinds", loopback_only=True),
        ListeningPort(plo6, "ca-kinds", loopback_only=True),
    ], key=lambda p: p.port)


def test_same_port_on_both_families_is_one_entry(listen: Callable[..., Listeners]) -> None:
    ln = listen([V4, {**V6ONLY, "port": "same"}, {**LO4}, {**LO6, "port": "same"}], name="ca-dedupe")
    shared, _, lo, _ = ln.ports
    assert ln.ports[1] == shared and ln.ports[3] == lo
    assert ours(default_scanner(), ln.ports) == sorted(
        [ListeningPort(shared, "ca-dedupe"), ListeningPort(lo, "ca-dedupe", loopback_only=True)],
        key=lambda p: p.port)


@pytest.mark.skipif(not is_root(), reason="binding ports below 9 needs root")
def test_ports_below_9_are_never_reported(listen: Callable[..., Listeners]) -> None:
    ln = listen([{**V4, "candidates": list(range(1, 9))}, V4], name="ca-low")
    low, high = ln.ports
    assert low < 9
    seen = {s.port for s in ProcNetReader().listeners()}
    assert low in seen  # the kernel shows it; the filter drops it
    assert ours(default_scanner(), ln.ports) == [ListeningPort(high, "ca-low")]


def test_ignore_list(listen: Callable[..., Listeners]) -> None:
    ln = listen([V4, V4], name="ca-ignore")
    keep, drop = ln.ports
    assert ours(default_scanner(), ln.ports, exclude={drop}) == [ListeningPort(keep, "ca-ignore")]


def test_full_name_past_the_15_character_comm_limit(listen: Callable[..., Listeners], short_tmp: Path) -> None:
    exe = short_tmp / "my-very-long-dev-server"
    exe.symlink_to(os.path.realpath(sys.executable))
    ln = listen([V4], executable=exe)
    assert ours(default_scanner(), ln.ports) == [ListeningPort(ln.ports[0], "my-very-long-dev-server")]


def _freeze(root: Path) -> None:
    """A /proc whose socket tables are a snapshot (other tests on this host open and close sockets
    all the time) and whose processes are the real ones."""
    (root / "net").mkdir(exist_ok=True)
    for name in ("tcp", "tcp6"):
        (root / "net" / name).write_bytes(Path(f"/proc/net/{name}").read_bytes())
    for entry in os.listdir("/proc"):
        if entry.isdigit() and not (root / entry).exists():
            (root / entry).symlink_to(f"/proc/{entry}")


def test_steady_state_does_not_walk_proc(listen: Callable[..., Listeners], tmp_path: Path) -> None:
    owners = OwnerCache(tmp_path)
    scanner = Scanner([ProcNetReader(tmp_path, owners=owners)])
    a = listen([V4], name="ca-first")
    _freeze(tmp_path)
    assert [p.process_name for p in ours(scanner, a.ports)] == ["ca-first"]
    walks = owners.walks
    first = scanner.scan().listeners
    assert scanner.scan().listeners is first  # nothing changed: the same answer, no parsing
    assert owners.walks == walks  # every inode known: no walk
    b = listen([V4], name="ca-second")
    _freeze(tmp_path)
    assert [p.process_name for p in ours(scanner, b.ports)] == ["ca-second"]
    assert [p.process_name for p in ours(scanner, a.ports)] == ["ca-first"]
    assert owners.walks == walks + 1  # one walk for the new socket
    # the owner exits and its socket with it: the cache forgets the inode
    a.close()
    _freeze(tmp_path)
    assert ours(scanner, a.ports) == []
    assert [p.process_name for p in ours(scanner, b.ports)] == ["ca-second"]


def test_owner_gone_is_looked_up_again(tmp_path: Path) -> None:
    """A cached owner that exited (the socket lives on in a process that inherited it) is searched
    afresh; a steady state walks nothing and returns the same answer object."""
    (tmp_path / "100" / "fd").mkdir(parents=True)
    (tmp_path / "100" / "fd" / "3").symlink_to("socket:[7]")
    (tmp_path / "100" / "fd" / "4").symlink_to("/dev/null")
    alive = {100: "first"}
    owners = OwnerCache(tmp_path, name_of=lambda pid: alive.get(pid))
    first = owners.resolve({7})
    assert first == {7: "first"} and owners.walks == 1
    assert owners.resolve({7}) is first and owners.walks == 1
    # 100 exits; 200 (its child) still holds the socket
    del alive[100]
    shutil.rmtree(tmp_path / "100")
    (tmp_path / "200" / "fd").mkdir(parents=True)
    (tmp_path / "200" / "fd" / "9").symlink_to("socket:[7]")
    alive[200] = "heir"
    assert owners.resolve({7}) == {7: "heir"} and owners.walks == 2
    # the heir renames itself (exec): the new name, no walk
    alive[200] = "exec-ed"
    assert owners.resolve({7}) == {7: "exec-ed"} and owners.walks == 2
    # and when nobody holds it any more it has no name (and is not walked for again at once)
    shutil.rmtree(tmp_path / "200")
    del alive[200]
    assert owners.resolve({7}) == {} and owners.walks == 3
    assert owners.resolve({7}) == {} and owners.walks == 3


def test_unowned_sockets_and_missing_tcp6(tmp_path: Path) -> None:
    """A /proc where we see the tables but no process (another pid namespace, hidepid): names are ""."""
    from .test_procnet import TCP

    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text(TCP)
    (tmp_path / "1" / "fd").mkdir(parents=True)
    (tmp_path / "2").mkdir()  # no fd dir: a process we may not inspect
    reader = ProcNetReader(tmp_path)
    got = reader.listeners()
    assert reader.tcp6_available is False
    if sys.byteorder == "little":
        assert sorted(got) == [Listener(4, "0.0.0.0", 38001, ""), Listener(4, "127.0.0.1", 38002, ""),
                               Listener(4, "127.1.2.3", 38003, "")]


def test_psutil_reader_agrees(listen: Callable[..., Listeners]) -> None:
    ln = listen([V4, V6ONLY, LO4], name="ca-psutil")
    assert ours(Scanner([PsutilReader()]), ln.ports) == ours(default_scanner(), ln.ports)


def test_psutil_reader_pid_none_or_forbidden_is_empty_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import namedtuple

    import psutil

    # the shape of psutil's sconn / addr tuples (their home module moves between versions)
    addr = namedtuple("addr", "ip port")
    sconn = namedtuple("sconn", "fd family type laddr raddr status pid")
    conns = [
        sconn(3, 1, 1, addr("0.0.0.0", 4000), (), psutil.CONN_LISTEN, None),
        sconn(3, 10, 1, addr("::", 4001), (), psutil.CONN_LISTEN, 4242),
        sconn(3, 1, 1, addr("0.0.0.0", 4002), addr("1.2.3.4", 5), psutil.CONN_ESTABLISHED, 1),
    ]
    monkeypatch.setattr(psutil, "net_connections", lambda kind: conns)
    reader = PsutilReader(name_of=lambda pid: None)  # the process vanished between the calls
    assert reader.listeners() == [Listener(4, "0.0.0.0", 4000, ""), Listener(6, "::", 4001, "")]


def test_restricted_proc_falls_back_with_a_warning(listen: Callable[..., Listeners], tmp_path: Path) -> None:
    ln = listen([V4], name="ca-fallback")
    scanner = Scanner([ProcNetReader(tmp_path), PsutilReader()])
    result = scanner.scan()
    assert result.reader == "psutil"
    assert f"cannot read {tmp_path}/net/tcp" in result.warning and "psutil" in result.warning
    assert [p for p in select_ports(result.listeners) if p.port in ln.ports] == [
        ListeningPort(ln.ports[0], "ca-fallback")]


def test_no_reader_works_is_a_scan_error(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").mkdir()  # reading a directory: EISDIR
    with pytest.raises(ReaderUnavailable, match="cannot read"):
        ProcNetReader(tmp_path).listeners()

    class Broken:
        name = "broken"

        def listeners(self) -> list[Listener]:
            raise ReaderUnavailable("nope")

    with pytest.raises(ScanError, match=r"cannot read .*; nope"):
        Scanner([ProcNetReader(tmp_path), Broken()]).scan()
    shutil.rmtree(tmp_path / "net")
