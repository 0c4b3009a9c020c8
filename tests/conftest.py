"""The reliability report: tests that inject a fault or feed bad input say so with the
``fault_log`` fixture; ``pytest --reliability-report FILE`` writes what they tried, how
often and whether the invariant held, as the table in docs/reliability.md.

    pytest --reliability-report docs/reliability.md
"""

from __future__ import annotations

import datetime
import logging
import platform
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_ENTRIES: list[dict[str, Any]] = []
_OUTCOMES: dict[str, str] = {}

Record = Callable[..., None]

HEADER = """\
# Reliability report

Every fault and bad input the test suite injects, how often, and the outcome. Generated
from a full test run by `pytest --reliability-report docs/reliability.md`; a row is
*held* when the test passed, that is when everything its invariant column says was checked
and true. Re-generate it after changing a test below. The ten-minute soak with 1,000 agents
reconnecting (a benchmark, not run in CI) is in [performance.md](performance.md#soak-ten-minutes-of-tasks-while-agents-drop-and-reconnect).

"""


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A CLI's ``main()`` run in-process points the root logger at the stderr pytest captured
    for that test; later tests would log to a closed stream ("--- Logging error ---")."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--reliability-report", metavar="FILE", default=None,
                     help="write the table of faults and bad inputs the tests tried (Markdown)")


@pytest.fixture
def fault_log(request: pytest.FixtureRequest) -> Iterator[Record]:
    """``fault_log(area, fault, tries, invariant)``: one row of the report for this test."""
    nodeid = request.node.nodeid

    def record(area: str, fault: str, tries: int | str, invariant: str) -> None:
        _ENTRIES.append({"area": area, "fault": fault, "tries": tries, "invariant": invariant, "test": nodeid})

    yield record


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _OUTCOMES[item.nodeid] = report.outcome
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    target = session.config.getoption("--reliability-report")
    if not target or not _ENTRIES:
        return
    Path(target).write_text(render(_ENTRIES, _OUTCOMES))


def render(entries: list[dict[str, Any]], outcomes: dict[str, str]) -> str:
    """One row per (area, fault, invariant): the tries of every test case that reported it
    summed, held only if every one of those cases passed."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for e in entries:
        row = rows.setdefault((e["area"], e["fault"], e["invariant"]), {"tries": 0, "tests": [], "outcomes": []})
        row["tries"] = row["tries"] + e["tries"] if isinstance(e["tries"], int) else e["tries"]
        path, _, name = e["test"].partition("::")
        test = f"{Path(path).name}::{name.split('[', 1)[0]}"
        if test not in row["tests"]:
            row["tests"].append(test)
        row["outcomes"].append(outcomes.get(e["test"], "not run"))
    held = sum(all(o == "passed" for o in r["outcomes"]) for r in rows.values())
    lines = [HEADER,
             f"Run: {datetime.date.today().isoformat()}, Python {platform.python_version()} on "
             f"{platform.system()} {platform.machine()}: {len(rows)} rows from {len(entries)} test cases, "
             f"{held} held, {len(rows) - held} not held.\n"]
    for area in sorted({key[0] for key in rows}):
        lines += [f"\n## {area}\n", "| fault or bad input | tries | invariant checked | outcome | test |",
                  "|---|---|---|---|---|"]
        for (row_area, fault, invariant), row in rows.items():
            if row_area != area:
                continue
            results = set(row["outcomes"])
            outcome = "held" if results == {"passed"} else "**NOT HELD**" if "failed" in results else \
                ", ".join(sorted(results))
            cells = [fault, str(row["tries"]), invariant, outcome, ", ".join(f"`{t}`" for t in row["tests"])]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).rstrip("\n") + "\n"
