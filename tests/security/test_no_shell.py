"""Static check over src/: no subprocess goes through a shell with data in it.

Forbidden anywhere: ``shell=True``; ``os.system``, ``os.popen``, ``os.exec*``/``os.spawn*`` with a
shell; ``asyncio.create_subprocess_shell``; an argv literal that starts a shell with ``-c``. The
allowed exceptions are listed below by file and function, so a new use anywhere else fails this
test. (Scripts and metadata commands run ``<login shell> -c <script>`` as the Go agent does, built
by ``coder_agent.childenv.command_argv`` from the passwd entry, not from a literal.)
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "coder_agent"

# (file relative to src/coder_agent, enclosing function): why it may run a shell
ALLOWED_SHELL_C = {
    ("config.py", "run_header_command"): "runs the operator's own --agent-header-command with sh -c, as Go's "
                                         "`coder agent --agent-header-command` does",
}
# Not a finding: coder_agent.procprio's ``/bin/sh -c <constant prelude> ... "$@"`` (the prelude is a
# literal; the values and the command travel as separate argv entries, never interpolated).
SHELLS = {"sh", "bash", "zsh", "dash", "ash", "ksh", "fish", "/bin/sh", "/bin/bash", "/usr/bin/env"}
SPAWNERS = {"run", "Popen", "call", "check_call", "check_output", "create_subprocess_exec"}
FORBIDDEN_CALLS = {"os.system", "os.popen", "asyncio.create_subprocess_shell", "subprocess.getoutput",
                   "subprocess.getstatusoutput", "commands.getoutput", "pty.spawn"}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return ""


def _functions(tree: ast.AST) -> dict[ast.AST, str]:
    """Each node → the name of the innermost function around it."""
    owner: dict[ast.AST, str] = {}

    def walk(node: ast.AST, fn: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else fn
            owner[child] = name
            walk(child, name)

    walk(tree, "<module>")
    return owner


def findings(root: Path = SRC) -> tuple[list[str], set[tuple[str, str]]]:
    bad: list[str] = []
    used_allowances: set[tuple[str, str]] = set()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(), filename=str(path))
        owner = _functions(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            where = f"{rel}:{node.lineno}"
            fname = _name(node.func)
            if fname in FORBIDDEN_CALLS or fname.endswith(".create_subprocess_shell"):
                bad.append(f"{where}: {fname}()")
            if fname.startswith("os.exec") or fname.startswith("os.spawn") or fname.startswith("os.posix_spawn"):
                bad.append(f"{where}: {fname}() (use subprocess with an argv list)")
            spawns = fname.split(".")[-1] in SPAWNERS
            for kw in node.keywords:
                literal_false = isinstance(kw.value, ast.Constant) and kw.value.value is False
                if spawns and kw.arg == "shell" and not literal_false:
                    bad.append(f"{where}: shell={ast.unparse(kw.value)}")
            for arg in node.args:
                if not isinstance(arg, ast.List | ast.Tuple) or len(arg.elts) < 2:
                    continue
                second = arg.elts[1]
                if isinstance(second, ast.Constant) and second.value == "-c":
                    first = arg.elts[0]
                    is_shell = not isinstance(first, ast.Constant) or str(first.value) in SHELLS
                    key = (rel, owner.get(node, "<module>"))
                    if is_shell and key in ALLOWED_SHELL_C:
                        used_allowances.add(key)
                    elif is_shell:
                        bad.append(f"{where}: [{ast.unparse(first)}, '-c', ...] runs a shell")
    return bad, used_allowances


def test_no_subprocess_through_a_shell() -> None:
    bad, used = findings()
    assert not bad, "\n".join(bad)
    # the allowlist is exact: each allowed use still exists (else drop it from the list)
    assert used == set(ALLOWED_SHELL_C), set(ALLOWED_SHELL_C) - used


def test_the_check_catches_each_form(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(
        "import os, subprocess, asyncio\n"
        "def f(x):\n"
        "    subprocess.run(x, shell=True)\n"
        "    os.system(x)\n"
        "    asyncio.create_subprocess_shell(x)\n"
        "    subprocess.Popen(['sh', '-c', x])\n"
        "    subprocess.Popen([shell, '-c', x])\n"
        "    os.execvp('ls', ['ls'])\n"
    )
    (tmp_path / "config.py").write_text(
        "import subprocess\ndef run_header_command(c):\n    subprocess.run(['sh', '-c', c])\n")
    bad, used = findings(tmp_path)
    assert len(bad) == 6, bad
    assert used == {("config.py", "run_header_command")}
