"""Enrollment as an attacker holding an enrollment key tries it (issue 15): tags that break
the one tag rule, and more of them than an agent may carry, are refused before anything is
written; the daemon keeps serving everyone else."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

from harness import BIN, AgentProc, Tetherd, closed_with
from websockets.sync.client import connect

from tether.protocol import MSGPACK, PROTOCOL_VERSION
from tether.protocol.frames import Enroll


def raw_enroll(tetherd: Tetherd, **fields: Any) -> tuple[Any, int | None]:
    """One enroll frame sent as a hostile client would: (the error answered, the close code)."""
    with connect(tetherd.url, max_size=None) as ws:
        ws.send(MSGPACK.encode(Enroll(version=PROTOCOL_VERSION, key=tetherd.enroll_key, **fields)))
        return closed_with(ws)


def test_unvalidated_enrollment_tags_are_refused(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc], fault_log: Callable[..., None]
) -> None:
    """15.3: tags that break the rule, or 100,000 of them (which once failed whole group
    commits), are refused 4001 naming the tag or the count; nothing is enrolled."""
    bystander = make_agent("bystander", start=True)
    error, code = raw_enroll(tetherd, machine_uuid="m-hostile-1", tags=["ok", "evil\ntag"])
    assert code == 4001 and error is not None
    assert error.message == ("invalid tag 'evil\\ntag': a tag is 1-64 characters of letters, digits and . _ : -, "
                             "starting with a letter or a digit")
    error, code = raw_enroll(tetherd, machine_uuid="m-hostile-2", tags=[f"t{i}" for i in range(100_000)])
    assert code == 4001 and error.message == "that is 100000 tags; an agent carries at most 64"
    assert [a["agent_id"] for a in tetherd.ctl("agents")[1]] == [bystander.agent_id]
    # The agent's own command line refuses such a tag before it talks to anyone.
    proc = subprocess.run([str(BIN / "tether-agent"), "enroll", "--server", tetherd.url, "--key", tetherd.enroll_key,
                           "--tag", "two words", "--state-dir", str(bystander.state_dir.with_name("x"))],
                          capture_output=True, text=True, env=tetherd.env, timeout=30)
    assert proc.returncode == 2 and "invalid tag 'two words': a tag is 1-64 characters" in proc.stderr
    task_id = tetherd.task("record", "--agent", bystander.agent_id)
    assert tetherd.ctl("wait", str(task_id), "--timeout", "30")[0] == 0
    fault_log("Enrollment", "enroll frames with a tag holding a newline, and with 100,000 tags; the agent CLI "
              "given a tag with a space", 3, "refused 4001 naming the tag and the rule or the count (the CLI: "
              "exit 2), no agent enrolled, the bystander agent served")
