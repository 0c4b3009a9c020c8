"""The import direction of DESIGN.md ("Layout"), and no import cycles, checked on the AST of every module.

protocol imports nothing of ours; daemon, agent and console import protocol but never one
another; tetherctl (tether/console/) runs without the daemon extra, so it and the package
``__init__`` it loads import only the stdlib, msgspec, websockets and tether.protocol.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tether"
MODULES = sorted(PACKAGE.rglob("*.py"))
CONSOLE_ALLOWED_THIRD_PARTY = {"msgspec", "websockets"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, source: str | None = None) -> Iterator[tuple[int, str]]:
    """``(line, absolute module)`` for every import in the file, relative ones resolved,
    including imports inside functions and ``if TYPE_CHECKING`` blocks."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    if source is None:
        source = path.read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # `from . import x` / `from tether.protocol import console` may name modules.
            yield node.lineno, target
            for alias in node.names:
                yield node.lineno, f"{target}.{alias.name}"


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


APPLICATIONS = ("tether.daemon", "tether.agent", "tether.console")
"""The packages built on the protocol: each imports it, none imports another."""


def violations(path: Path, source: str | None = None) -> list[str]:
    name = module_name(path)
    found = []
    for line, target in imports(path, source):
        where = f"{path.relative_to(ROOT)}:{line} imports {target}"
        if within(name, "tether.protocol") and within(target, "tether") and not within(target, "tether.protocol"):
            found.append(f"{where}: protocol imports nothing of ours")
        for own in APPLICATIONS:
            for other in APPLICATIONS:
                if other != own and within(name, own) and within(target, other):
                    found.append(f"{where}: {own} never imports {other}")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_import_direction(path: Path) -> None:
    assert violations(path) == []


CONSOLE_CLOSURE = [PACKAGE / "__init__.py", *sorted((PACKAGE / "console").rglob("*.py"))]


@pytest.mark.parametrize("path", CONSOLE_CLOSURE, ids=lambda p: str(p.relative_to(ROOT)))
def test_console_needs_no_daemon_dependencies(path: Path) -> None:
    bad = []
    for line, target in imports(path):
        top = target.partition(".")[0]
        if top == "tether":
            ok = target == "tether" or within(target, "tether.protocol") or within(target, "tether.console")
        else:
            ok = top in sys.stdlib_module_names or top in CONSOLE_ALLOWED_THIRD_PARTY or top == "__future__"
        if not ok:
            bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert bad == [], "tetherctl must run with only the stdlib, msgspec, websockets and tether.protocol"


def test_the_checker_sees_violations() -> None:
    """A checker that cannot fail is a defect: show it imports it must refuse."""
    probe = PACKAGE / "protocol" / "probe.py"
    source = "from ..daemon import store\nfrom . import errors\nimport json\n"
    assert violations(probe, source) == [
        "tether/protocol/probe.py:1 imports tether.daemon: protocol imports nothing of ours",
        "tether/protocol/probe.py:1 imports tether.daemon.store: protocol imports nothing of ours",
    ]
    agent = PACKAGE / "agent" / "sub" / "probe.py"
    assert len(violations(agent, "def f():\n    from ...daemon.store import Store\n")) == 2
    daemon = PACKAGE / "daemon" / "__init__.py"
    assert violations(daemon, "import tether.agent.sdk\n") == [
        "tether/daemon/__init__.py:1 imports tether.agent.sdk: tether.daemon never imports tether.agent"]
    console = PACKAGE / "console" / "cli.py"
    assert violations(console, "from ..daemon.rpc import ConsoleRPC\n") == [
        "tether/console/cli.py:1 imports tether.daemon.rpc: tether.console never imports tether.daemon",
        "tether/console/cli.py:1 imports tether.daemon.rpc.ConsoleRPC: tether.console never imports tether.daemon"]
    assert len(violations(daemon, "from tether.console import ConsoleClient\n")) == 2


def test_console_imports_in_a_python_without_the_daemon_extra() -> None:
    blocked = ["aiosqlite", "anyio", "uvloop", "prometheus_client", "croniter", "tether.agent", "tether.daemon"]
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "import tether.console.cli as cli\n"
        "loaded = sorted(m for m, module in sys.modules.items()\n"
        "                if module is not None and m.startswith('tether.') and not m.startswith('tether.protocol'))\n"
        "assert 'tether.console.cli' in loaded and all(m.startswith('tether.console') for m in loaded), loaded\n"
        "assert cli.main(['--help']) == 0\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


# -- no import cycles ----------------------------------------------------------------------


def module_path(name: str) -> Path | None:
    """The file of a module of ours, if ``name`` is one."""
    base = ROOT / Path(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def graph(sources: dict[Path, str] | None = None) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports, every import counted: at the top, in a
    function, under TYPE_CHECKING. ``from P import x`` imports the module ``P.x`` if there
    is one (the package ``P`` is only its way there), else ``P`` (``x`` is a name in it)."""
    edges: dict[str, set[str]] = {}
    for path in MODULES:
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        source = path.read_text(encoding="utf-8") if sources is None or path not in sources else sources[path]
        found = edges.setdefault(name, set())
        for node in ast.walk(ast.parse(source, str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join([*parts[: len(parts) - (node.level - 1)], *([node.module] if node.module else [])])
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if module_path(sub) is not None else base)
            found.update(t for t in targets if within(t, "tether") and module_path(t) is not None and t != name)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def packages(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph with each subpackage (``tether.daemon.store``) one node: a module outside it
    that imports it, and is imported by it, makes a cycle too (the store would need the
    daemon that needs the store)."""
    def node(name: str) -> str:
        return ".".join(name.split(".")[:3])

    collapsed: dict[str, set[str]] = {}
    for name, targets in edges.items():
        collapsed.setdefault(node(name), set()).update(node(t) for t in targets if node(t) != node(name))
    return collapsed


def test_no_import_cycles() -> None:
    """Each module of a cycle must be read to read the next: none is allowed in ``tether/``,
    between modules or between a subpackage and the modules around it."""
    edges = graph()
    assert cycles(edges) == []
    assert cycles(packages(edges)) == []


def test_the_cycle_checker_sees_a_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(edges) == [["a", "b", "c"]]
    session = PACKAGE / "daemon" / "session.py"
    probe = graph({session: "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .push import Push\n"})
    assert ["tether.daemon.push", "tether.daemon.session"] in cycles(probe)
    sqlite = PACKAGE / "daemon" / "store" / "sqlite.py"
    probe = graph({sqlite: "from ..schedules import next_fire\n"})  # schedules imports the store
    assert cycles(probe) == [] and ["tether.daemon.schedules", "tether.daemon.store"] in cycles(packages(probe))
