"""No state is spelt outside :mod:`tether.protocol.lifecycle` (STYLE: "a state decided by a
string tuple inside SQL code" is what the redesign removed): an AST scan of ``tether/``
for a string constant that is a state's value, or holds one quoted as SQL writes it
(``'queued'``). The frozen schema migrations are history, written once, never changed:
they alone are exempt. So are the few words below that are not states where they are
used (each with its reason); an entry that no longer matches anything fails the test."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tether.protocol.lifecycle import DeliveryState, RunState, TaskState

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tether"
STATES = frozenset(s.value for enum in (DeliveryState, TaskState, RunState) for s in enum)
QUOTED = re.compile("'(" + "|".join(sorted(STATES)) + ")'")
EXEMPT_FILES = {"tether/protocol/lifecycle.py", "tether/daemon/store/schema.py", "tether/agent/journal_schema.py"}
NOT_STATES = {
    # tetherctl's words for other things: row labels of ``show`` (when the run was sent,
    # acked, finished), and the status of a token, a key or a schedule not revoked or paused.
    ("tether/console/render.py", "sent"),
    ("tether/console/render.py", "acked"),
    ("tether/console/render.py", "finished"),
    ("tether/console/render.py", "active"),
    # the migrations not applied yet, in ``tetherd migrate --json``
    ("tether/daemon/cli.py", "pending"),
    # a timer wheel entry, in its repr: still to fire, or fired or cancelled
    ("tether/daemon/wheel.py", "pending"),
    ("tether/daemon/wheel.py", "done"),
    # the name both clients give a WebSocket close code that the error registry does not hold
    ("tether/protocol/errors.py", "closed"),  # (code_name's)
}


def state_literals(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """``(line, text)`` of every string constant in the module that spells a state."""
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source)
    names = {id(c) for node in ast.walk(tree) if isinstance(node, ast.Assign)  # __slots__: attribute names
             and any(isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets)
             for c in ast.walk(node.value)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in names:
            if node.value in STATES or QUOTED.search(node.value):
                found.append((node.lineno, node.value))
    return sorted(found)


def scan() -> tuple[list[str], set[tuple[str, str]]]:
    bad: list[str] = []
    used: set[tuple[str, str]] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        name = str(path.relative_to(ROOT))
        if name in EXEMPT_FILES:
            continue
        for line, text in state_literals(path):
            if (name, text) in NOT_STATES:
                used.add((name, text))
            else:
                bad.append(f"{name}:{line}: {text!r}")
    return bad, used


def test_no_state_is_spelt_outside_the_lifecycle() -> None:
    bad, used = scan()
    assert bad == [], "use tether.protocol.lifecycle's states (sql_in, sql_value for SQL)"
    assert used == NOT_STATES, f"stale exemptions: {NOT_STATES - used}"


def test_the_scan_sees_states_spelt_in_code_and_in_sql() -> None:
    """A checker that cannot fail is a defect."""
    source = (
        'x = "queued"\n'
        'y = f"UPDATE d SET s = \'acked\' WHERE id = {i}"\n'
        "z = \"state IN ('pending', 'running')\"\n"
        'ok = ("queue", "done_at", "a \'done\'", "\\"done\\"")\n'
        '__slots__ = ("done",)\n'
    )
    found = state_literals(Path("probe.py"), source)
    assert [line for line, _ in found] == [1, 2, 3, 4]
    assert found[-1] == (4, "a 'done'")
