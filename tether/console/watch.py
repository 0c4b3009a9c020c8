"""``tetherctl watch``: a task's deliveries live, from the ``task.watch`` events.

On a terminal, one line per delivery (agent, state, a progress bar, the last message),
redrawn in place as events come (ANSI cursor moves, no dependency: the agent and tetherctl
install nothing but msgspec and websockets). Elsewhere (a pipe, a file, CI logs), one plain
line per event, nothing redrawn. Everything an agent sent is shown through
:func:`~.render.visible`, so its text cannot move the cursor itself.
"""

from __future__ import annotations

from typing import Any, TextIO

import msgspec

from tether.protocol import console as rpc
from tether.protocol.frames import Event, progress_parts
from tether.protocol.lifecycle import DeliveryState

from .render import fmt_time, json_text, visible

BAR = 24
"""Characters of a progress bar."""

MAX_MESSAGE = 60
"""Characters of a delivery's last message on its terminal line (its end is kept)."""


def bar(percent: float | None) -> str:
    """``[#########...............]  37%``, or blanks when the command gave no percent."""
    if percent is None:
        return " " * (BAR + 7)
    filled = round(BAR * max(0.0, min(percent, 100.0)) / 100)
    return f"[{'#' * filled}{'.' * (BAR - filled)}] {percent:3.0f}%"


class _Row:
    __slots__ = ("agent_id", "message", "percent", "state")

    def __init__(self, agent_id: str, state: str, progress: str) -> None:
        self.agent_id = agent_id
        self.state = state
        self.percent, self.message = progress_parts(progress)


class Watch:
    """Shows ``task.watch`` events: ``tty`` redraws a line per delivery, else plain lines."""

    def __init__(self, out: TextIO, *, tty: bool, as_json: bool = False) -> None:
        self.out = out
        self.tty = tty and not as_json
        self.as_json = as_json
        self.rows: dict[int, _Row] = {}
        self._drawn = 0

    def __call__(self, event: Event) -> None:
        if self.as_json:  # one JSON line per event, for scripts
            print(json_text({"topic": event.topic, "data": event.data}, indent=None), file=self.out, flush=True)
            return
        try:
            line = self._take(event)
        except msgspec.ValidationError:
            line = f"{visible(event.topic)}: {json_text(event.data, indent=None)}"
        if self.tty:
            self._draw()
        elif line:
            print(visible(line), file=self.out, flush=True)

    def _take(self, event: Event) -> str:
        """Update the rows from one event; the plain line that says what changed."""
        if event.topic == "task":
            view = msgspec.convert(event.data, rpc.TaskView)
            for d in view.deliveries:
                self.rows[d.delivery_id] = _Row(d.agent_id, d.state, d.progress)
            return f"task {view.task_id} {view.command}: {len(view.deliveries)} deliveries"
        if event.topic == "delivery":
            change = msgspec.convert(event.data, rpc.DeliveryEvent)
            row = self.rows.setdefault(change.delivery_id, _Row(change.agent_id, change.state, ""))
            row.state = change.state
            return f"{fmt_time(change.updated_at)}  delivery {change.delivery_id}  agent {change.agent_id}  " \
                   f"{change.state}"
        report = msgspec.convert(event.data, rpc.ProgressEvent)
        row = self.rows.setdefault(report.delivery_id, _Row(report.agent_id, DeliveryState.RUNNING.value, ""))
        row.percent, row.message = report.percent, report.message
        return f"{fmt_time(report.updated_at)}  delivery {report.delivery_id}  agent {report.agent_id}  " \
               f"{report.progress}"

    def _draw(self) -> None:
        lines = []
        width = max((len(visible(r.agent_id)) for r in self.rows.values()), default=0)
        for row in self.rows.values():
            message = visible(row.message)
            if len(message) > MAX_MESSAGE:
                message = "..." + message[-(MAX_MESSAGE - 3):]
            lines.append(f"{visible(row.agent_id):<{width}}  {row.state:<9} {bar(row.percent)}  {message}")
        # Up to the first line drawn, then each line rewritten and cleared to its end.
        up = f"\x1b[{self._drawn}F" if self._drawn else ""
        self.out.write(up + "".join(f"{line}\x1b[K\n" for line in lines))
        self.out.flush()
        self._drawn = len(lines)

    def result(self, result: Any) -> None:
        """The task once it is finished: the last state of every line."""
        if self.as_json:
            return
        view = msgspec.convert(result, rpc.TaskView)
        for d in view.deliveries:
            row = self.rows.setdefault(d.delivery_id, _Row(d.agent_id, d.state, d.progress))
            row.state = d.state
            if DeliveryState(d.state) is DeliveryState.DONE and row.percent is not None:
                row.percent = 100.0
        if self.tty:
            self._draw()
