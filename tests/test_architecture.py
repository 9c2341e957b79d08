"""The import graph of ``coder_agent`` goes one way (ARCHITECTURE.md).

Every ``import`` in every module counts, wherever it is: at the top, inside a function, under
``if TYPE_CHECKING:`` — a lazy import is still a dependency. Modules are grouped by their
top-level unit (``coder_agent.logs.pipeline`` → ``logs``; ``coder_agent.log`` → ``log``), and:

* no circle of imports may span more than one top-level unit (a circle inside one package is
  that package's own business);
* only the CLI may import the composition root ``coder_agent.daemon`` (and the devserver);
* a capability imports another capability only through the interface modules listed in
  :data:`INTERFACES`;
* the Daemon has no ``Any``-typed attribute (shared state is typed).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "coder_agent"
PKG = "coder_agent"

# One folder each, wired by daemon.py (ARCHITECTURE.md): they import one another only through
# the interface modules below.
CAPABILITIES = {"agentrpc", "appstatus", "devcontainers", "gitauth", "logs", "ports", "reinit", "rpty", "scripts",
                "sshd", "tailnet"}
# capability -> the modules of other capabilities it may import (Protocols, small types, the
# script runner the agent session drives).
INTERFACES: dict[str, set[str]] = {
    "agentrpc": {"coder_agent.appstatus.transport", "coder_agent.appstatus.core", "coder_agent.logs.transport",
                 "coder_agent.scripts", "coder_agent.scripts.runner", "coder_agent.scripts.session",
                 # the result of bringing a manifest devcontainer up (a small pure type)
                 "coder_agent.devcontainers.cliparse"},
    "devcontainers": {"coder_agent.scripts.runner", "coder_agent.scripts.spec"},
    "scripts": {"coder_agent.logs.text"},
    # sessions are process groups started and ended as scripts' are (kill_group, wait_exit)
    "rpty": {"coder_agent.scripts.runner"},
    # ... and JetBrains' forwarded channel is recognised by the listener's owner (the pure /proc/net reader)
    "sshd": {"coder_agent.scripts.runner", "coder_agent.ports.procnet"},
    # the tunnel's traffic for UpdateStats, in the agent session's interface module
    "tailnet": {"coder_agent.agentrpc.parts"},
}


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The coder_agent modules ``name`` imports (absolute names; ``from x import y`` yields x.y
    when y is a module, else x)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == PKG or a.name.startswith(PKG + "."):
                    yield a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                drop = node.level - 1 if is_pkg else node.level
                base = base[: len(base) - drop] if drop else base
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not (mod == PKG or mod.startswith(PKG + ".")):
                continue
            for a in node.names:
                sub = f"{mod}.{a.name}"
                yield sub if sub in known else mod


def unit(module: str) -> str:
    """The top-level unit: ``coder_agent.logs.pipeline`` → ``logs``; ``coder_agent`` → ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def with_parents(module: str, known: set[str]) -> set[str]:
    """Importing ``a.b.c`` runs ``a/b/__init__.py`` first: the parent packages are dependencies too."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(2, len(parts) + 1)} & known


def graph(*, parents: bool = True) -> dict[str, set[str]]:
    """Module → the modules it imports (with ``parents``: and the packages that import runs)."""
    mods = modules()
    known = set(mods)
    g: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps: set[str] = set()
        for m in imports(name, path, known):
            deps |= with_parents(m, known) if parents else {m}
        deps -= with_parents(name, known)  # a module never "imports" its own packages
        g[name] = deps
    return g


def strongly_connected(g: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    out: list[set[str]] = []
    counter = 0
    for root in g:
        if root in index:
            continue
        work = [(root, iter(sorted(g.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(g.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = set()
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.add(w)
                        if w == v:
                            break
                    out.append(comp)
    return out


def test_the_graph_sees_lazy_and_type_checking_imports() -> None:
    g = graph()
    assert "coder_agent.daemon" in g["coder_agent.cli.run"]  # imported inside a function there
    # a TYPE_CHECKING import is seen: the walker reads every node of the tree
    tree_mod = "coder_agent.service"
    assert "coder_agent.clock" in g[tree_mod]


def test_no_circle_spans_two_top_level_units() -> None:
    g = graph()
    bad = []
    for comp in strongly_connected(g):
        units = {unit(m) for m in comp}
        if len(units) > 1:
            bad.append(f"{len(units)} units {sorted(units)}: {sorted(comp)}")
    assert not bad, "import circles across top-level modules/packages:\n" + "\n".join(bad)


def test_only_the_cli_imports_the_composition_root() -> None:
    g = graph()
    offenders = sorted(m for m, deps in g.items()
                       if "coder_agent.daemon" in deps and not m.startswith("coder_agent.cli"))
    assert not offenders, f"only coder_agent.cli may import coder_agent.daemon: {offenders}"


def test_the_daemon_never_imports_the_devserver() -> None:
    g = graph()
    offenders = sorted(m for m, deps in g.items() if unit(m) not in ("cli", "devserver")
                       and any(unit(d) == "devserver" for d in deps))
    assert not offenders, f"only the CLI (demo) may import coder_agent.devserver: {offenders}"


def test_capabilities_meet_only_through_interfaces() -> None:
    g = graph(parents=False)
    bad = []
    for m, deps in g.items():
        u = unit(m)
        if u not in CAPABILITIES:
            continue
        for d in deps:
            v = unit(d)
            if v in CAPABILITIES and v != u and d not in INTERFACES.get(u, set()):
                bad.append(f"{m} -> {d}")
    assert not bad, "a capability imports another's internals:\n" + "\n".join(sorted(bad))


def test_daemon_shares_no_any_typed_state() -> None:
    tree = ast.parse((SRC / "daemon.py").read_text())
    daemon = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Daemon")
    anys = []
    attrs = [n for n in daemon.body if isinstance(n, ast.AnnAssign)]  # class-level declarations
    attrs += [n for n in ast.walk(daemon) if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Attribute)]
    for node in attrs:
        if "Any" in ast.unparse(node.annotation):
            anys.append(ast.unparse(node))
    for fn in ast.walk(daemon):  # properties are attributes too
        if (isinstance(fn, ast.FunctionDef) and any(ast.unparse(d) == "property" for d in fn.decorator_list)
                and fn.returns is not None and "Any" in ast.unparse(fn.returns)):
            anys.append(f"{fn.name} -> {ast.unparse(fn.returns)}")
    assert not anys, f"Any-typed attributes on the Daemon: {anys}"


@pytest.mark.parametrize("example", [
    ({"a": {"b"}, "b": {"a"}}, [{"a", "b"}]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
])
def test_circle_finder(example: tuple[dict[str, set[str]], list[set[str]]]) -> None:
    g, circles = example
    assert [c for c in strongly_connected(g) if len(c) > 1] == circles


def test_circle_finder_catches_a_cross_unit_circle() -> None:
    g = {"coder_agent.log": {"coder_agent.logs.retention"}, "coder_agent.logs.retention": {"coder_agent.log"}}
    comps = [c for c in strongly_connected(g) if len({unit(m) for m in c}) > 1]
    assert comps == [{"coder_agent.log", "coder_agent.logs.retention"}]
