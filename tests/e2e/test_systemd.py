"""The systemd units as shipped (issue 16.15): they verify, their paths are those the install
they document produces, the agent's unit does not restart an agent refused for good, and a
first start under systemd keeps the credentials out of the journal."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import pytest
from harness import BIN

from tether.agent.cli import EXIT_FATAL_SESSION

ROOT = Path(__file__).resolve().parents[2]
UNITS = ("tetherd.service", "tether-agent.service", "tether-agent-once.service")
TIMERS = {"tether-agent-once.timer": "tether-agent-once.service"}
"""Each timer and the service it starts (verified together: a timer needs its unit)."""


def settings(name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (ROOT / "systemd" / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def install_steps(name: str) -> list[str]:
    return [line.removeprefix("#   ").strip() for line in (ROOT / "systemd" / name).read_text().splitlines()
            if line.startswith("#   sudo ")]


def venv_of(name: str) -> str:
    (venv,) = [s.split()[-1] for s in install_steps(name) if s.startswith("sudo python3 -m venv ")]
    return venv


@pytest.mark.parametrize("name", UNITS)
def test_the_documented_install_gives_the_paths_the_unit_names(name: str) -> None:
    venv, unit, steps = venv_of(name), settings(name), install_steps(name)
    (exec_start,) = unit["ExecStart"]
    binary = shlex.split(exec_start)[0]
    assert binary == f"{venv}/bin/{'tetherd' if name == 'tetherd.service' else 'tether-agent'}"
    assert any(s.startswith(f"sudo {venv}/bin/pip install ") for s in steps), steps
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(rf'^{Path(binary).name} = "', pyproject, re.M)  # a console script pip puts in bin/
    (docs,) = unit["Documentation"]
    assert docs == f"file://{venv}/README.md"
    assert f"sudo install -m 644 README.md {venv}/README.md" in steps and (ROOT / "README.md").is_file()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed here (the units are verified where it is)")
@pytest.mark.parametrize("name", [*UNITS, *TIMERS])
def test_the_unit_verifies(name: str, tmp_path: Path) -> None:
    """systemd-analyze checks every directive and that ExecStart is an executable: the venv's
    bin directory stands in for the documented one (checked above). A timer is verified with
    the service it starts."""
    names = [name, TIMERS[name]] if name in TIMERS else [name]
    for each in names:
        text = (ROOT / "systemd" / each).read_text()
        if each in UNITS:
            text = text.replace(f"{venv_of(each)}/bin/", f"{BIN}/")
        (tmp_path / each).write_text(text)
    out = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / each) for each in names)],
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stderr) == (0, ""), out.stderr


def test_the_once_timer_starts_the_once_service_which_runs_once_and_never_overlaps() -> None:
    timer = settings("tether-agent-once.timer")
    assert timer["Unit"] == ["tether-agent-once.service"] and timer["OnUnitInactiveSec"]
    assert timer["WantedBy"] == ["timers.target"]
    service = settings("tether-agent-once.service")
    assert service["Type"] == ["oneshot"]
    assert shlex.split(service["ExecStart"][0])[1:] == ["once"]
    steps = install_steps("tether-agent-once.service")
    assert any("systemctl enable --now tether-agent-once.timer" in s for s in steps), steps


def test_the_agent_unit_does_not_restart_an_agent_refused_for_good() -> None:
    unit = settings("tether-agent.service")
    assert unit["Restart"] == ["always"] and unit["RestartPreventExitStatus"] == [str(EXIT_FATAL_SESSION)]


def test_a_first_start_under_systemd_writes_the_credentials_to_a_private_file(tmp_path: Path,
                                                                              env: dict[str, str]) -> None:
    """systemd connects stdout to the journal and says so in JOURNAL_STREAM (device:inode);
    a pipe with that variable set to its own device and inode is the same to tetherd."""
    read_end, write_end = os.pipe()
    st = os.fstat(write_end)
    data = tmp_path / "data"
    proc = subprocess.Popen([str(BIN / "tetherd"), "serve", "--data-dir", str(data), "--listen", "127.0.0.1:0"],
                            stdout=write_end, stderr=subprocess.PIPE, text=True,
                            env={**env, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    os.close(write_end)
    try:
        assert proc.stderr is not None
        written = proc.stderr.readline()
        assert "event=credentials_written" in written, written
        path = data / "initial-credentials"
        assert f"path={path}" in written and "tta_" not in written
        assert "event=listening" in proc.stderr.readline()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert re.search(r"admin token:\s+tta_\S+", path.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        with os.fdopen(read_end) as journal:
            printed = journal.read()
    assert proc.returncode == 0 and "tta_" not in printed + err
