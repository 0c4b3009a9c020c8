"""docs/protocol.md is generated from the Structs; it must not drift from them."""

from __future__ import annotations

import difflib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_protocol_docs.py"


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protocol_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_protocol_docs_are_fresh() -> None:
    gen = load_generator()
    expected = gen.render()
    current = gen.OUTPUT.read_text(encoding="utf-8") if gen.OUTPUT.exists() else ""
    if current != expected:
        diff = "".join(list(difflib.unified_diff(
            current.splitlines(keepends=True), expected.splitlines(keepends=True),
            "docs/protocol.md", "generated", n=1))[:60])
        raise AssertionError(
            f"docs/protocol.md is stale: regenerate it with `{gen.REGENERATE}` and commit it.\n{diff}")


def test_generation_is_deterministic() -> None:
    gen = load_generator()
    assert gen.render() == gen.render()


def test_every_frame_method_and_error_code_is_documented() -> None:
    from tether.protocol import ErrorCode
    from tether.protocol.frames import FROM_DAEMON, TO_DAEMON
    from tether.protocol.methods import METHODS

    text = load_generator().render()
    for cls in (*TO_DAEMON, *FROM_DAEMON):
        assert f"### `{cls.__struct_config__.tag}`" in text
        assert f'"title": "{cls.__name__}"' in text
    for method in (*METHODS, "action"):
        assert f"### `{method}`" in text
    for code in ErrorCode:
        assert f"| {int(code)} | `{code.slug}` |" in text
