"""docs/security.md's table of findings: a row for each of issue 15's, each saying what was done and naming tests that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "security.md"


def finding_rows() -> dict[int, list[str]]:
    """Cells of each row of the findings table, by finding number."""
    rows: dict[int, list[str]] = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].isdigit():
            rows[int(cells[0])] = cells
    return rows


def test_every_finding_of_issue_15_has_a_row() -> None:
    assert sorted(finding_rows()) == list(range(1, 15))


def test_every_finding_says_what_was_done_and_names_tests_that_exist() -> None:
    for number, cells in finding_rows().items():
        refs = re.findall(r"`(tests/[^`:]+\.py)::(\w+)`", cells[-1])
        assert refs, f"finding {number} names no test"
        assert cells[-2], f"finding {number} says nothing of what was done"
        for ref in refs:
            path, name = ROOT / ref[0], ref[1]
            assert path.is_file(), f"finding {number}: {ref[0]} does not exist"
            tree = ast.parse(path.read_text())
            functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
            assert name in functions, f"finding {number}: {ref[0]} has no test {name}"
