"""The first hour of a new user: the README's quick start and tour, run as written.

The commands are read from README.md, so the README cannot drift from what works. Each
runs verbatim in one shell session (exports, ``&`` and the comments included) in a
temporary directory; only the README's placeholders are filled in with what the daemon
printed (the URL, the admin token, the enrollment key, the agent id). The daemon listens on
a free port instead of 8765 through ``./tether-data/tetherd.toml``, the config file the
README names. Installing is not repeated (the tests run in the installed venv): the quick
start's install steps are checked to be those of the test command, which ``.ci/run`` runs.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import BIN, LogWatcher, Tetherd, wait_until

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

PLACEHOLDER_URL = "ws://127.0.0.1:8765"
PLACEHOLDER_TOKEN = "tta_..."
PLACEHOLDER_KEY = "XXXXX-XXXXX-XXXXX-XXXXX-XXXXX"
PLACEHOLDER_AGENT = "AGENT_ID"


def section(heading: str) -> str:
    """A README section by its heading (any level), up to the next heading of its level or
    above (a ``#`` line inside a code block is a shell comment, not a heading)."""
    lines = README.read_text().splitlines(keepends=True)
    out: list[str] = []
    level = 0
    fenced = False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        m = None if fenced else re.match(r"(#+) (.*)\n", line)
        if m and level and len(m.group(1)) <= level:
            break
        if level:
            out.append(line)
        elif m and m.group(2) == heading:
            level = len(m.group(1))
    assert level, f"README.md has no section {heading!r}"
    return "".join(out)


def sh_blocks(heading: str) -> list[list[str]]:
    """The ```sh blocks of a README section, as command lines (continuations joined)."""
    blocks = []
    for body in re.findall(r"```sh\n(.*?)```", section(heading), re.S):
        lines: list[str] = []
        for line in body.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                lines.append(line)
        blocks.append(lines)
    return blocks


def quick_start() -> tuple[str, str]:
    """The quick start's two commands: run the daemon, run the tests."""
    blocks = sh_blocks("Quick start")
    assert [len(b) for b in blocks] == [1, 1], f"the quick start is two one-line commands: {blocks}"
    return blocks[0][0], blocks[1][0]


def steps(command: str) -> list[str]:
    return [step.strip() for step in command.split("&&")]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    _, test_command = quick_start()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci, f".ci/run does not run the README's test command {test_command!r}"
    assert steps(test_command)[-1] == "pytest"


def test_the_quick_start_installs_as_the_test_command_does() -> None:
    serve, test_command = quick_start()
    install, run = steps(serve)[:-1], steps(serve)[-1]
    assert shlex.split(run)[:2] == ["tetherd", "serve"]
    assert [s.replace(".[daemon]", ".[test]") for s in install] == steps(test_command)[:-1]


def test_the_quick_start_makes_and_uses_a_venv(tmp_path: Path, env: dict[str, str]) -> None:
    """A stock Debian/Ubuntu pip refuses installs outside a venv: the quick start's steps
    before `pip install`, run verbatim, leave a shell whose pip installs into ./.venv."""
    install = steps(quick_start()[0])[:-1]
    before_pip = install[:next(i for i, s in enumerate(install) if s.startswith("pip "))]
    assert before_pip, f"the quick start installs without making a venv first: {install}"
    probe = 'python -c "import sys; print(sys.prefix, sys.prefix != sys.base_prefix)"'
    out = subprocess.run(["bash", "-c", " && ".join([*before_pip, probe, "command -v pip"])], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    prefix, in_venv = out.stdout.splitlines()[0].rsplit(" ", 1)
    assert (Path(prefix), in_venv) == (tmp_path / ".venv", "True")
    assert out.stdout.splitlines()[1] == str(tmp_path / ".venv" / "bin" / "pip")


class Shell:
    """One bash session fed command lines as a user types them; each line's output and
    exit status are read back (stderr, background jobs' logs included, goes to ``log``)."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(["bash", "--norc", "--noprofile"], cwd=cwd, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self.log = LogWatcher(self.proc.stderr, "shell stderr")
        self._out: queue.Queue[str] = queue.Queue()
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()
        self._n = 0

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._out.put(line)

    def run(self, line: str, timeout: float = 60) -> tuple[int, str]:
        assert self.proc.stdin is not None
        self._n += 1
        marker = f"__exit_{self._n}__"
        self.proc.stdin.write(f"{line}\necho {marker}=$?\n")
        self.proc.stdin.flush()
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = self._out.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{line!r} did not finish within {timeout} s; output so far: {out}") from None
            m = re.fullmatch(rf"{marker}=(\d+)\n", got)
            if m:
                return int(m.group(1)), "".join(out)
            out.append(got)

    def close(self) -> None:
        """End the session and the jobs it left in the background (its process group)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)
        self.log.close()
        self._pump_thread.join(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            assert stream is not None
            stream.close()


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """The user's working directory: the venv the README's commands come from is its .venv."""
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    data = tmp_path / "tether-data"
    data.mkdir()
    (data / "tetherd.toml").write_text('listen = "127.0.0.1:0"\n')  # a free port, not 8765
    yield tmp_path


def test_the_readme_quick_start_and_tour_work_as_written(home: Path, env: dict[str, str]) -> None:
    env = {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}
    serve = steps(quick_start()[0])[-1]
    daemon = subprocess.Popen(serve, shell=True, cwd=home, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, start_new_session=True)
    out, err = LogWatcher(daemon.stdout, "tetherd stdout"), LogWatcher(daemon.stderr, "tetherd")
    shell = Shell(home, env)
    try:
        url = err.wait_for(r"event=listening url=(ws://\S+)").group(1)
        token = out.wait_for(r"admin token:\s+(\S+)").group(1)
        key = out.wait_for(r"enrollment key:\s+(\S+)").group(1)
        agent_id = ""

        def fill(line: str) -> str:
            line = line.replace(PLACEHOLDER_URL, url).replace(PLACEHOLDER_TOKEN, token)
            return line.replace(PLACEHOLDER_KEY, key).replace(PLACEHOLDER_AGENT, agent_id)

        tour, actions = sh_blocks("A short tour")
        for line in [*tour, *actions]:
            if PLACEHOLDER_AGENT in line:
                assert agent_id, f"{line!r} needs an agent id, but no agent was enrolled before it"
            code, printed = shell.run(fill(line))
            assert code == 0, f"{line!r} exited {code}:\n{printed}\n{shell.log.text()[-3000:]}"
            if shlex.split(line, comments=True)[:2] == ["tether-agent", "enroll"]:
                agent_id = printed.strip().splitlines()[-1]
        # What the tour promises: the task reached the agent and ran.
        code, printed = shell.run("tetherctl show 1 --json")
        assert code == 0 and '"state": "done"' in printed, printed
        wait_until(lambda: "event=session_open" in shell.log.text(), what="the agent's session")
        assert "Traceback" not in err.text() + shell.log.text()
    finally:
        shell.close()
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=30)
        for watcher, stream in ((out, daemon.stdout), (err, daemon.stderr)):
            watcher.close()
            assert stream is not None
            stream.close()


def test_the_readme_schedule_examples_work_as_written(tetherd: Tetherd) -> None:
    """Its first example targets a tag no agent carries yet: kept, and the answer says so."""
    env = {**tetherd.env, "PATH": f"{BIN}{os.pathsep}{tetherd.env.get('PATH', '')}", "TETHER_URL": tetherd.url,
           "TETHER_TOKEN": tetherd.admin_token}
    adds = [line for block in sh_blocks("Recurring schedules") for line in block
            if line.startswith("tetherctl schedule add ")]
    assert adds
    for line in adds:
        out = subprocess.run(line, shell=True, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (line, out.stderr)
        if "--tag " in line:
            assert "no agent carries tag" in out.stderr, out.stderr
