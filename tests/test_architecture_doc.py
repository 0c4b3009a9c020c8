"""docs/architecture.md stays true: every module it names exists, and it names every module."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
NAMED = re.compile(r"\b(?:tether/)?((?:protocol|daemon|agent|console)/[\w/]+\.py)\b")


def named(text: str) -> set[str]:
    """The modules a text names, as paths under ``tether/`` (``daemon/push.py`` or
    ``tether/daemon/push.py``)."""
    return {m.group(1) for m in NAMED.finditer(text)}


def test_the_checker_reads_both_spellings_of_a_module() -> None:
    assert named("`tether/daemon/push.py` and `protocol/session.py`, not bench/x.py") == {
        "daemon/push.py", "protocol/session.py"}


def test_every_module_the_architecture_page_names_exists() -> None:
    missing = sorted(p for p in named(DOC.read_text()) if not (ROOT / "tether" / p).is_file())
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_the_architecture_page_names_every_module() -> None:
    modules = {str(p.relative_to(ROOT / "tether")) for p in (ROOT / "tether").rglob("*.py")
               if p.name != "__init__.py" or p.parent.name == "store"}
    unnamed = sorted(modules - named(DOC.read_text()) - {"__init__.py"})
    assert not unnamed, f"docs/architecture.md does not say what these modules own: {unnamed}"
