"""What tetherctl prints of text that comes from agents (issue 15, finding 7).

A hostile agent (a raw session with real credentials) puts terminal escape sequences,
carriage returns, newlines and a bidirectional override in its hostname, a progress
report, a result's error and a result's output. Real ``tetherctl`` processes then show
them: every character a terminal would act on is written as its escape (``\\x1b``), and
``--json`` parses back to the exact string the agent sent.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
from harness import BIN, Tetherd, wait_until
from websockets.sync.client import ClientConnection, connect

from tether.protocol import MSGPACK, PROTOCOL_VERSION, decode_from_daemon
from tether.protocol.frames import Ack, Enroll, Enrolled, Hello, Progress, Result, Task, Welcome

ESC = "\x1b"
HOSTNAME = f"web-01{ESC}]52;c;cm0gLXJmIH4K\x07{ESC}[2K\rdb-01"
"""Sets the clipboard (OSC 52), erases the line and writes another name over it."""
PROGRESS = f"50%{ESC}[2K\rdone\x9b31m"
ERROR = f"timeout{ESC}[1A{ESC}[2K\rdone\u202eenod\nforged line"
OUTPUT = {"note": f"{ESC}]0;owned\x07ok", "rtl": "\u202egnp.exe"}
RAW = ("\x1b", "\x07", "\r", "\x9b", "\u202e")
"""What must never reach the terminal as it is."""


def tetherctl(tetherd: Tetherd, *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr, decoded as they are (no newline translation: a CR
    that reached the terminal stays a CR)."""
    env = {**tetherd.env, "TETHER_URL": tetherd.url, "TETHER_TOKEN": tetherd.admin_token}
    proc = subprocess.run([str(BIN / "tetherctl"), *args], capture_output=True, env=env, timeout=60)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


@contextmanager
def hostile_agent(tetherd: Tetherd) -> Iterator[tuple[str, ClientConnection]]:
    with connect(tetherd.url) as ws:
        ws.send(MSGPACK.encode(Enroll(version=PROTOCOL_VERSION, key=tetherd.enroll_key, hostname=HOSTNAME,
                                      machine_uuid="hostile-terminal")))
        enrolled = decode_from_daemon(ws.recv(timeout=10))
    assert isinstance(enrolled, Enrolled)
    with connect(tetherd.url) as ws:
        ws.send(MSGPACK.encode(Hello(role="agent", version=PROTOCOL_VERSION, agent_id=enrolled.agent_id,
                                     token=enrolled.token, hostname=HOSTNAME, commands=["record"])))
        assert isinstance(decode_from_daemon(ws.recv(timeout=10)), Welcome)
        yield enrolled.agent_id, ws


def next_task(ws: ClientConnection) -> Task:
    while not isinstance(frame := decode_from_daemon(ws.recv(timeout=15)), Task):
        pass
    return frame


def assert_shown_not_obeyed(text: str) -> None:
    for raw in RAW:
        assert raw not in text, f"{raw!r} reached the terminal: {text!r}"


def test_agent_strings_with_terminal_escapes_are_shown_visibly(
    tetherd: Tetherd, fault_log: Callable[..., None]
) -> None:
    with hostile_agent(tetherd) as (agent_id, ws):
        failed = tetherd.task("record", "--agent", agent_id)
        task = next_task(ws)
        ws.send(MSGPACK.encode(Ack(delivery_ids=[task.delivery_id])))
        ws.send(MSGPACK.encode(Progress(delivery_id=task.delivery_id, percent=None, message=PROGRESS)))
        wait_until(lambda: tetherd.show(failed)["deliveries"][0]["progress"] == PROGRESS, what="the progress report")
        # tetherctl wait prints every change on stderr as it happens, then the task with its error.
        waiter = subprocess.Popen([str(BIN / "tetherctl"), "wait", str(failed), "--timeout", "30"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env={**tetherd.env, "TETHER_URL": tetherd.url, "TETHER_TOKEN": tetherd.admin_token})
        wait_until(lambda: tetherd.metrics().get('tether_sessions_open{role="console"}', 0) >= 1,
                   what="tetherctl wait's session")
        ws.send(MSGPACK.encode(Result(delivery_id=task.delivery_id, ok=False, error=ERROR)))
        out, err = (b.decode() for b in waiter.communicate(timeout=60))
        assert waiter.returncode == 1, err
        ok = tetherd.task("record", "--agent", agent_id)
        task = next_task(ws)
        ws.send(MSGPACK.encode(Result(delivery_id=task.delivery_id, ok=True,
                                      output=msgspec.Raw(MSGPACK.encode_value(OUTPUT)))))
        wait_until(lambda: tetherd.show(ok)["deliveries"][0]["state"] == "done", what="the output")

    shown: dict[str, str] = {"wait stdout": out, "wait stderr": err}
    for args in (("agents",), ("show", str(failed)), ("show", str(ok)), ("tasks", "--state", "all")):
        code, stdout, stderr = tetherctl(tetherd, *args)
        assert code == 0, stderr
        shown[" ".join(args)] = stdout + stderr
    for what, text in shown.items():
        assert_shown_not_obeyed(text)
        assert "\nforged line" not in text, what
    assert "web-01\\x1b]52;c;cm0gLXJmIH4K\\x07\\x1b[2K\\x0ddb-01" in shown["agents"]
    assert "50%\\x1b[2K\\x0ddone\\x9b31m" in shown[f"show {failed}"]
    assert "timeout\\x1b[1A\\x1b[2K\\x0ddone\\u202eenod\\x0aforged line" in shown[f"show {failed}"]
    assert "timeout\\x1b[1A" in shown["wait stdout"] and "failed" in shown["wait stderr"]
    assert '"\\u001b]0;owned\\u0007ok"' in shown[f"show {ok}"] and '"\\u202egnp.exe"' in shown[f"show {ok}"]

    # --json keeps the exact strings (JSON escapes them; parsing gives them back).
    agents: Any = json.loads(tetherctl(tetherd, "agents", "--json")[1])
    assert [a["hostname"] for a in agents if a["agent_id"] == agent_id] == [HOSTNAME]
    for args, check in ((("show", str(failed), "--json"), lambda v: v["deliveries"][0]["error"] == ERROR),
                        (("show", str(ok), "--json"), lambda v: v["deliveries"][0]["result"] == OUTPUT)):
        stdout = tetherctl(tetherd, *args)[1]
        assert_shown_not_obeyed(stdout)
        assert check(json.loads(stdout))
    fault_log("Hostile input", "an agent's hostname, progress, error and output holding terminal escapes "
              "(OSC 52 clipboard, line erase, CR, C1 CSI, bidi override, newline)", 5,
              "tetherctl tables, show, wait (stdout and stderr) print each as its escape, none raw; --json parses "
              "back to the exact strings")
