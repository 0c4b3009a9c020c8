"""``tetherctl watch``'s display: bars redrawn in place on a terminal, plain lines elsewhere,
agents' text escaped either way."""

from __future__ import annotations

import io

from tether.console.watch import Watch, bar
from tether.protocol.frames import Event


def task_event() -> Event:
    delivery = {"delivery_id": 5, "agent_id": "a1", "state": "acked", "updated_at": 1.0, "sent_at": None,
                "acked_at": None, "started_at": None, "finished_at": None, "progress": "", "result": None,
                "error": "", "run": 1, "task_id": 9}
    view = {"task_id": 9, "command": "scan", "args": {}, "target": "agent:a1", "priority": 1, "ttl": 60,
            "created_at": 0.0, "expires_at": 60.0, "state": "active", "deliveries": [delivery]}
    return Event(id=1, topic="task", data=view)


def progress(percent: float, message: str) -> Event:
    return Event(id=1, topic="progress", data={"delivery_id": 5, "agent_id": "a1", "progress": f"{percent:.0f}% {message}",
                                               "percent": percent, "message": message, "updated_at": 2.0})


def test_a_terminal_gets_a_bar_per_delivery_redrawn_in_place() -> None:
    out = io.StringIO()
    watch = Watch(out, tty=True)
    watch(task_event())
    watch(progress(50, "5/10 files /etc/\x1b[2Jx"))
    text = out.getvalue()
    assert text.count("\n") == 2 and "\x1b[1F" in text  # the second drawing went back up one line
    assert bar(50) in text and "\\x1b[2J" in text and "\x1b[2J" not in text  # the agent's escape, shown
    assert bar(None).strip() == "" and bar(100).startswith("[" + "#" * 24)


def test_elsewhere_one_plain_line_per_event_and_json_lines_with_json() -> None:
    out = io.StringIO()
    watch = Watch(out, tty=False)
    watch(task_event())
    watch(progress(50, "half"))
    watch(Event(id=1, topic="delivery", data={"delivery_id": 5, "agent_id": "a1", "state": "done",
                                              "previous": "running", "terminal": True, "updated_at": 3.0}))
    lines = out.getvalue().splitlines()
    assert lines[0] == "task 9 scan: 1 deliveries" and "50% half" in lines[1] and lines[2].endswith("done")
    as_json = io.StringIO()
    Watch(as_json, tty=True, as_json=True)(progress(50, "half"))
    assert as_json.getvalue().startswith('{"data": {') and '"topic": "progress"' in as_json.getvalue()
