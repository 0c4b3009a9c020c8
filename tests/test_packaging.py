"""Packaging metadata and the documents a user is pointed at (issue 16.17)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_license_is_an_spdx_expression_the_build_backend_reads() -> None:
    """PEP 639: ``license = "Apache-2.0"``; the table form is deprecated (setuptools stops
    accepting it in 2027), and setuptools reads the string form from version 77."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in pyproject["build-system"]["requires"]


def test_every_markdown_file_the_docs_name_is_in_the_repository() -> None:
    for doc in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"):
        for name in set(re.findall(r"(?<![\w/])[\w.-][\w./-]*\.md\b", doc.read_text())):  # not /abs/paths
            candidates = [doc.parent / name, ROOT / name, ROOT / "docs" / name]
            assert any(p.is_file() for p in candidates), f"{doc.relative_to(ROOT)} names {name}, which is not here"


def test_protocol_md_says_batch_goes_both_ways_and_names_no_web_page() -> None:
    text = (ROOT / "docs" / "protocol.md").read_text()
    assert "| `batch` | [Batch](#batch) | both ways |" in text
    assert "web page" not in text


def test_performance_md_opens_with_a_summary_for_users() -> None:
    text = (ROOT / "docs" / "performance.md").read_text()
    first = text.split("\n## ")[1]
    assert first.startswith("In one screen") and len(first.splitlines()) <= 30
