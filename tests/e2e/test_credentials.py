"""`tetherd key|token create` (offline, on the data directory) and `tetherctl key|token create`
(through the daemon) are one command: the same flags (tests/test_command_lines.py), the
same checks and write (the daemon's key.create / token.create request), the same record and
the same output."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
from harness import BIN, Tetherd

FLAGS = {
    "key": ["--tag", "web", "--tag", "lab", "--uses", "3", "--expires-in", "7d", "--allow-requested-tags"],
    "token": ["--role", "viewer", "--label", "ci runner"],
}
TIMES = {"created_at", "expires_at", "revoked_at"}


def tetherd_create(tetherd: Tetherd, what: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "tetherd"), what, "create", "--data-dir", str(tetherd.data_dir), *argv],
                          capture_output=True, text=True, env=tetherd.env, timeout=60)


def tetherctl_create(tetherd: Tetherd, what: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**tetherd.env, "TETHER_URL": tetherd.url, "TETHER_TOKEN": tetherd.admin_token}
    return subprocess.run([str(BIN / "tetherctl"), what, "create", *argv], capture_output=True, text=True,
                          env=env, timeout=60)


def _record(row: dict[str, Any], what: str) -> dict[str, Any]:
    """A listed record without what differs between any two (its id, its times, its secret)."""
    return {k: v for k, v in row.items() if k not in {f"{what}_id", what, *TIMES}}


@pytest.mark.parametrize("what", FLAGS)
def test_both_tools_make_the_same_record_from_the_same_flags(tetherd: Tetherd, what: str) -> None:
    offline = tetherd_create(tetherd, what, *FLAGS[what], "--json")
    assert offline.returncode == 0, offline.stderr
    online = tetherctl_create(tetherd, what, *FLAGS[what], "--json")
    assert online.returncode == 0, online.stderr
    made = [json.loads(offline.stdout), json.loads(online.stdout)]
    assert made[0].keys() == made[1].keys()
    assert _record(made[0], what) == _record(made[1], what)
    assert made[0][what] and made[1][what] and made[0][what] != made[1][what]

    _, listed = tetherd.ctl(what, "list")
    rows = {row[f"{what}_id"]: row for row in listed}
    both = [rows[m[f"{what}_id"]] for m in made]
    assert _record(both[0], what) == _record(both[1], what) == _record(made[0], what)
    if what == "key":
        assert both[0]["tags"] == ["lab", "web"] and both[0]["uses_left"] == 3 and both[0]["allow_requested_tags"]
        for row in both:  # 7 days from when each was made
            assert row["expires_at"] - row["created_at"] == pytest.approx(7 * 86_400, abs=1)
    else:
        assert (both[0]["role"], both[0]["label"]) == ("viewer", "ci runner")


@pytest.mark.parametrize("what", FLAGS)
def test_both_tools_print_the_secret_alone_and_say_the_same(tetherd: Tetherd, what: str) -> None:
    outputs = [tetherd_create(tetherd, what), tetherctl_create(tetherd, what)]
    for out in outputs:
        assert out.returncode == 0, out.stderr
        assert re.fullmatch(r"\S+\n", out.stdout)
    said = [re.sub(r" \d+ created", " N created", out.stderr) for out in outputs]
    assert said[0] == said[1] and said[0].endswith("it is shown only this once (tetherd keeps a SHA-256 digest)\n")


@pytest.mark.parametrize(("argv", "says"), [
    (["key", "--uses", "0"], "it must be 1 or more"),
    (["key", "--tag", "a,b"], "--tag"),
    (["key", *(f"--tag=t{i}" for i in range(70))], "tags"),
    (["token", "--role", "root"], "invalid choice: 'root'"),
    (["token", "--label", "x" * 201], "label"),
])
def test_both_tools_refuse_the_same_input(tetherd: Tetherd, argv: list[str], says: str) -> None:
    what, *flags = argv
    _, before = tetherd.ctl(what, "list")
    for out in (tetherd_create(tetherd, what, *flags), tetherctl_create(tetherd, what, *flags)):
        assert out.returncode == 2 and says in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert out.stdout == ""
    assert tetherd.ctl(what, "list")[1] == before
