"""tetherctl's terminal safety (tether.console.render): what it prints of any text is shown, not obeyed."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from tether.console.render import HIDDEN, json_text, render_table, visible


@given(st.text())
def test_visible_leaves_no_character_a_terminal_acts_on(text: str) -> None:
    shown = visible(text)
    assert not HIDDEN & set(shown)
    assert shown == text or any(ch in HIDDEN for ch in text)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=20))
def test_json_text_parses_back_to_the_value_and_holds_no_hidden_character(value: object) -> None:
    text = json_text(value)
    assert json.loads(text) == value
    assert not (HIDDEN - {"\n"}) & set(text)


def test_a_newline_in_a_cell_cannot_forge_a_row() -> None:
    table = render_table(("AGENT", "HOSTNAME"), [("a1", "web\nb2  db"), ("c3", "x\x1b[2K")])
    assert table.splitlines() == [
        "AGENT  HOSTNAME",
        "a1     web\\x0ab2  db",
        "c3     x\\x1b[2K",
    ]
