"""The import direction of DESIGN.md ("Layout"), checked on the AST of every module.

protocol imports nothing of ours; daemon and agent import protocol but never each other;
tetherctl (tether/daemon/console.py) runs without the daemon extra, so it and the package
``__init__`` modules it loads import only the stdlib, msgspec, websockets and tether.protocol.
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


def violations(path: Path, source: str | None = None) -> list[str]:
    name = module_name(path)
    found = []
    for line, target in imports(path, source):
        where = f"{path.relative_to(ROOT)}:{line} imports {target}"
        if within(name, "tether.protocol") and within(target, "tether") and not within(target, "tether.protocol"):
            found.append(f"{where}: protocol imports nothing of ours")
        if within(name, "tether.agent") and within(target, "tether.daemon"):
            found.append(f"{where}: the agent never imports the daemon")
        if within(name, "tether.daemon") and within(target, "tether.agent"):
            found.append(f"{where}: the daemon never imports the agent")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_import_direction(path: Path) -> None:
    assert violations(path) == []


CONSOLE_MODULES = {"tether.daemon.console", "tether.daemon.console_client", "tether.daemon.console_render"}
CONSOLE_CLOSURE = [
    PACKAGE / "__init__.py", PACKAGE / "daemon" / "__init__.py",
    *(PACKAGE / "daemon" / f"{m.rsplit('.', 1)[1]}.py" for m in sorted(CONSOLE_MODULES)),
]


@pytest.mark.parametrize("path", CONSOLE_CLOSURE, ids=lambda p: str(p.relative_to(ROOT)))
def test_console_needs_no_daemon_dependencies(path: Path) -> None:
    bad = []
    for line, target in imports(path):
        top = target.partition(".")[0]
        if top == "tether":
            ok = within(target, "tether.protocol") or target in {"tether", "tether.daemon"} or any(
                within(target, m) for m in CONSOLE_MODULES
            )
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
        "tether/daemon/__init__.py:1 imports tether.agent.sdk: the daemon never imports the agent"]


def test_console_imports_in_a_python_without_the_daemon_extra() -> None:
    blocked = ["aiosqlite", "anyio", "uvloop", "prometheus_client", "tether.agent"]
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "import tether.daemon.console as console\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('tether.daemon'))\n"
        "assert loaded == ['tether.daemon', 'tether.daemon.console', 'tether.daemon.console_client',"
        " 'tether.daemon.console_render'], loaded\n"
        "assert console.main(['--help']) == 0\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
