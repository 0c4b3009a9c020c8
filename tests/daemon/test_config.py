"""tetherd.toml: defaults, unknown keys refused by name, bad values explained."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.daemon import config
from tether.daemon.config import Config, ConfigError


def test_every_key_has_a_default() -> None:
    c = config.load(None, {})
    assert (c.host, c.port, c.window, c.data_dir) == ("127.0.0.1", 8765, 32, "./tether-data")


def test_unknown_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    f = tmp_path / "tetherd.toml"
    f.write_text('lissen = "0.0.0.0:1"\n')
    with pytest.raises(ConfigError, match=r"unknown key `lissen` in .*tetherd.toml \(did you mean `listen`\?\)"):
        config.load(f, {})


def test_unknown_key_without_a_close_match_lists_known_keys(tmp_path: Path) -> None:
    f = tmp_path / "tetherd.toml"
    f.write_text("zzz = 1\n")
    with pytest.raises(ConfigError, match="known keys: listen"):
        config.load(f, {})


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('listen = "nope"', "HOST:PORT"),
        ("window = 0", "window must be at least 1"),
        ('window = "ten"', "Expected `int`"),
        ('synchronous = "sometimes"', "synchronous"),
        ("listen = ", "not valid TOML"),
    ],
)
def test_bad_values_are_explained(tmp_path: Path, text: str, words: str) -> None:
    f = tmp_path / "tetherd.toml"
    f.write_text(text + "\n")
    with pytest.raises(ConfigError, match=words):
        config.load(f, {})


def test_missing_file_and_overrides(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "absent.toml", {})
    f = tmp_path / "tetherd.toml"
    f.write_text('listen = "127.0.0.1:9000"\nwindow = 50\n')
    c = config.load(f, {"listen": "[::1]:0", "data_dir": None})
    assert (c.host, c.port, c.window) == ("::1", 0, 50)


def test_default_file_parses_to_the_defaults(tmp_path: Path) -> None:
    f = tmp_path / "tetherd.toml"
    text = config.default_file_text()
    f.write_text("\n".join(line.removeprefix("# ") if " = " in line else line for line in text.splitlines()))
    assert config.load(f, {}) == Config()
