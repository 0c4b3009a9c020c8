"""Automation hooks end to end (issue 20): a real tetherd, real scripts, a real HTTPS server
with a certificate no system trusts, a real SMTP server, all on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from harness import TEST_SETTINGS, AgentProc, Tetherd, wait_until
from hook_servers import MailTarget, WebTarget, free_port

from tether.console import ConsoleClient


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def web(ca: trustme.CA) -> Iterator[WebTarget]:
    target = WebTarget(ca)
    yield target
    target.close()


def script(tetherd: Tetherd, name: str, text: str) -> Path:
    """A script in <data-dir>/scripts/, as an operator would put it there."""
    scripts = tetherd.data_dir / "scripts"
    scripts.mkdir(mode=0o755, exist_ok=True)
    path = scripts / name
    path.write_text(text)
    path.chmod(0o755)
    return path


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def _by_trigger(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The payloads a recording script appended to ``path``, by trigger."""
    got: dict[str, list[dict[str, Any]]] = {}
    for line in _lines(path) if path.exists() else []:
        payload = json.loads(line)
        got.setdefault(payload["trigger"], []).append(payload)
    return got


def recorder(tetherd: Tetherd, path: Path) -> None:
    """The script ``seen``: appends each payload it is given to ``path``, one JSON line each."""
    script(tetherd, "seen", f'#!/bin/sh\necho "$1" | base64 -d >> {path}\necho >> {path}\n')


def hook(tetherd: Tetherd, *args: str) -> dict[str, Any]:
    return tetherd.ctl("hooks", "add", *args)[1]  # type: ignore[no-any-return]


def refused(tetherd: Tetherd, *args: str) -> str:
    code, out = tetherd.ctl(*args, check=False)
    assert code == 2, out
    return str(out)


def runs(tetherd: Tetherd, name: str) -> list[dict[str, Any]]:
    return tetherd.ctl("hooks", "runs", name)[1]  # type: ignore[no-any-return]


def test_a_before_task_script_veto_refuses_the_task_with_its_message(tetherd: Tetherd, tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    script(tetherd, "no-fridays", f"""#!/bin/sh
echo "$1" | base64 -d > {seen}
echo "checking"
echo '{{"result": "failure", "message": "no tasks on Fridays"}}'
""")
    hook(tetherd, "gate", "--trigger", "before-task", "--script", "no-fridays", "--data", '{"ticket": "CHG-7"}')
    err = refused(tetherd, "task", "os_version", "--all")
    assert "vetoed (1422): refused by hook 'gate': no tasks on Fridays" in err
    assert tetherd.ctl("tasks", "--state", "all")[1] == []  # nothing was created
    payload = json.loads(seen.read_text())
    assert payload["trigger"] == "before-task" and payload["version"] == 1 and payload["ticket"] == "CHG-7"
    assert payload["task"]["command"] == "os_version" and payload["who"].startswith("admin token 1")
    assert [(r["outcome"], r["message"]) for r in runs(tetherd, "gate")] == [("vetoed", "no tasks on Fridays")]
    # A script that says nothing lets it through; disabled, the hook is not run at all.
    script(tetherd, "no-fridays", "#!/bin/sh\nexit 0\n")
    assert tetherd.task("os_version", "--all") == 1
    tetherd.ctl("hooks", "disable", "gate")
    script(tetherd, "no-fridays", "#!/bin/sh\nexit 3\n")
    assert tetherd.task("os_version", "--all") == 2
    assert len(runs(tetherd, "gate")) == 2


def test_a_before_task_web_veto_refuses_the_task(tetherd: Tetherd, web: WebTarget) -> None:
    web.answer = (200, {"result": "failure", "message": "change freeze until Monday"})
    hook(tetherd, "freeze", "--trigger", "before-task", "--url", web.url, "--fingerprint", web.fingerprint)
    err = refused(tetherd, "task", "os_version", "--all")
    assert "refused by hook 'freeze': change freeze until Monday" in err
    web.answer = (200, {"result": "success"})
    assert tetherd.task("os_version", "--all") == 1


def test_an_after_task_web_hook_gets_the_task_signed_with_custom_data(tetherd: Tetherd, web: WebTarget) -> None:
    hook(tetherd, "audit", "--trigger", "after-task", "--url", web.url, "--fingerprint", web.fingerprint.upper(),
         "--secret", "s3cr3t", "--data", '{"ticket": "CHG-1", "env": {"name": "prod"}}')
    task_id = tetherd.task("echo --text hi", "--all")
    got = web.received.wait(lambda items: len(items) >= 1, what="the after-task POST")[0]
    payload = json.loads(got["body"])
    assert payload["trigger"] == "after-task" and payload["hook"] == "audit"
    assert payload["task"]["task_id"] == task_id and payload["task"]["command"] == "echo"
    assert payload["task"]["args"] == {"text": "hi"}
    assert payload["ticket"] == "CHG-1" and payload["env"] == {"name": "prod"}
    headers = {k.lower(): v for k, v in got["headers"].items()}
    assert headers["x-tether-shared-secret"] == "s3cr3t"
    expected = hmac.new(b"s3cr3t", headers["x-tether-timestamp"].encode() + got["body"], hashlib.sha256).hexdigest()
    assert headers["x-tether-signature"] == expected
    wait_until(lambda: runs(tetherd, "audit") and runs(tetherd, "audit")[0]["outcome"] == "ok", what="an ok run")
    shown = tetherd.ctl("hooks", "show", "audit")[1]
    assert shown["secret_set"] is True and "s3cr3t" not in json.dumps(shown)
    assert "s3cr3t" not in tetherd.log.text()  # type: ignore[union-attr]
    assert tetherd.ctl("hooks", "fingerprint", f"https://127.0.0.1:{web.port}")[1]["sha256"] == web.fingerprint


def test_a_wrong_fingerprint_refuses_the_call_with_a_clear_error(tetherd: Tetherd, web: WebTarget) -> None:
    hook(tetherd, "pinned", "--trigger", "after-task", "--url", web.url, "--fingerprint", "ab" * 32)
    tetherd.task("os_version", "--all")
    run = wait_until(lambda: runs(tetherd, "pinned"), what="a run record")[0]
    assert run["outcome"] == "error"
    assert "certificate fingerprint mismatch" in run["message"] and web.fingerprint in run["message"]
    assert web.received.items == []  # nothing was sent to the server it does not trust
    # Without a pin, a certificate no system CA signed is refused as well.
    hook(tetherd, "unpinned", "--trigger", "after-task", "--url", web.url)
    tetherd.task("os_version", "--all")
    run = wait_until(lambda: runs(tetherd, "unpinned"), what="a run record")[0]
    assert run["outcome"] == "error" and "not trusted" in run["message"]


@pytest.mark.parametrize("policy", ["fail-open", "fail-closed"])
def test_a_before_hook_timeout_fails_open_or_closed(tetherd: Tetherd, policy: str) -> None:
    script(tetherd, "slow", "#!/bin/sh\nexec sleep 30\n")
    hook(tetherd, "slow", "--trigger", "before-task", "--script", "slow", "--timeout", "1", "--on-timeout", policy)
    if policy == "fail-open":
        assert tetherd.task("os_version", "--all") == 1
    else:
        err = refused(tetherd, "task", "os_version", "--all")
        assert "refused by hook 'slow': the script did not finish within 1 s (killed) (the hook is fail-closed)" in err
    run = runs(tetherd, "slow")[0]
    assert run["outcome"] == "timeout" and 1.0 <= run["duration"] < 5.0


def test_an_email_hook_delivers_a_message(tmp_path: Path, env: dict[str, str], ca: trustme.CA) -> None:
    mail = MailTarget(ca, tmp_path)
    tetherd = Tetherd(tmp_path / "data", env, {
        **TEST_SETTINGS, "smtp_host": "127.0.0.1", "smtp_port": mail.port, "smtp_security": "starttls",
        "smtp_username": MailTarget.USER, "smtp_password": MailTarget.PASSWORD, "smtp_from": "tetherd@test",
        "smtp_ca": str(mail.ca_file)})
    try:
        tetherd.start()
        hook(tetherd, "mail", "--trigger", "after-task", "--email", "ops@example.com", "--email", "sec@example.com",
             "--subject", "task {task.task_id} created: {task.command}")
        task_id = tetherd.task("os_version", "--all")
        got = mail.received.wait(lambda items: len(items) >= 1, what="an email")[0]
        assert got["to"] == ["ops@example.com", "sec@example.com"] and got["from"] == "tetherd@test"
        assert f"Subject: task {task_id} created: os_version" in got["data"]
        assert '"trigger": "after-task"' in got["data"]  # the default body: the payload
        assert wait_until(lambda: runs(tetherd, "mail"))[0]["outcome"] == "ok"
        assert MailTarget.PASSWORD not in tetherd.log.text()  # type: ignore[union-attr]
        assert tetherd.ctl("hooks", "test", "mail")[1]["outcome"] == "ok"
    finally:
        if tetherd.proc is not None and tetherd.proc.poll() is None:
            tetherd.kill()
        mail.close()


def test_an_after_hook_interrupted_by_sigkill_runs_after_the_restart(tetherd: Tetherd, tmp_path: Path) -> None:
    started, release, out = tmp_path / "started", tmp_path / "release", tmp_path / "out"
    script(tetherd, "record", f"""#!/bin/sh
echo $$ > {started}
while [ ! -e {release} ]; do sleep 0.05; done
echo "$1" | base64 -d >> {out}
echo >> {out}
""")
    hook(tetherd, "record", "--trigger", "after-task", "--script", "record", "--timeout", "60")
    task_id = tetherd.task("os_version", "--all")
    pid = int(wait_until(lambda: started.exists() and started.read_text().strip(), what="the hook's start"))
    tetherd.kill(signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)  # it dies with tetherd, as under systemd (KillMode=control-group)
    assert not out.exists()
    release.touch()
    tetherd.start()
    lines = wait_until(lambda: out.exists() and _lines(out), what="the hook's run after the restart")
    assert [json.loads(line)["task"]["task_id"] for line in lines] == [task_id]
    assert runs(tetherd, "record")[0]["outcome"] == "ok"


def test_bad_hooks_are_refused_with_clear_errors(tetherd: Tetherd) -> None:
    script(tetherd, "ok", "#!/bin/sh\nexit 0\n")
    hook(tetherd, "A", "--trigger", "after-task", "--script", "ok")
    hook(tetherd, "a", "--trigger", "after-task", "--script", "ok")  # names are case-sensitive
    assert "hook_exists (1331): a hook named 'A' exists already" in refused(
        tetherd, "hooks", "add", "A", "--trigger", "after-task", "--script", "ok")
    assert "must start with https://" in refused(
        tetherd, "hooks", "add", "w", "--trigger", "after-task", "--url", "http://127.0.0.1/")
    assert "not a path" in refused(tetherd, "hooks", "add", "s", "--trigger", "after-task", "--script", "../ok")
    assert "not a path" in refused(tetherd, "hooks", "add", "s", "--trigger", "after-task", "--script", "/bin/sh")
    assert "custom data must be a JSON object, not list" in refused(
        tetherd, "hooks", "add", "d", "--trigger", "after-task", "--script", "ok", "--data", "[1]")
    assert "--data is not valid JSON" in refused(
        tetherd, "hooks", "add", "d", "--trigger", "after-task", "--script", "ok", "--data", "{")
    assert "'task' collide with the after-task payload's own keys" in refused(
        tetherd, "hooks", "add", "d", "--trigger", "after-task", "--script", "ok", "--data", '{"task": 1}')
    assert "invalid choice: 'after-lunch'" in refused(
        tetherd, "hooks", "add", "t", "--trigger", "after-lunch", "--script", "ok")
    assert "unknown_script (1332): no script 'missing'" in refused(
        tetherd, "hooks", "add", "m", "--trigger", "after-task", "--script", "missing")
    assert "timeout must be more than 0 and at most 60" in refused(
        tetherd, "hooks", "add", "t", "--trigger", "before-task", "--script", "ok", "--timeout", "61")
    assert "unknown_hook (1330)" in refused(tetherd, "hooks", "show", "b")
    assert [h["name"] for h in tetherd.ctl("hooks", "list")[1]] == ["A", "a"]


def test_a_script_writable_by_others_is_not_run(tetherd: Tetherd) -> None:
    path = script(tetherd, "loose", "#!/bin/sh\nexit 0\n")
    hook(tetherd, "loose", "--trigger", "after-task", "--script", "loose")
    path.chmod(0o777)
    tetherd.task("os_version", "--all")
    run = wait_until(lambda: runs(tetherd, "loose"), what="a run record")[0]
    assert run["outcome"] == "error" and "writable by no one else" in run["message"]


def test_enroll_hooks_veto_and_notify(tetherd: Tetherd, tmp_path: Path, env: dict[str, str]) -> None:
    seen = tmp_path / "enrolled"
    script(tetherd, "no-lab", '#!/bin/sh\necho "$1" | base64 -d | grep -q \'"hostname"\' && '
                              'echo \'{"result": "failure", "message": "enrollment closed"}\'\n')
    recorder(tetherd, seen)
    hook(tetherd, "closed", "--trigger", "before-enroll", "--script", "no-lab")
    hook(tetherd, "seen", "--trigger", "after-enroll", "--script", "seen")
    hook(tetherd, "online", "--trigger", "agent-online", "--script", "seen")
    agent = AgentProc("e1", tmp_path, tetherd, env)
    proc = agent.enroll(check=False)
    assert proc.returncode != 0 and "enrollment closed" in proc.stderr
    tetherd.ctl("hooks", "rm", "closed")
    agent.enroll()
    agent.start()
    try:
        lines = wait_until(lambda: seen.exists() and len(_lines(seen)) >= 2 and _lines(seen),
                           what="after-enroll and agent-online")
        got = {json.loads(line)["trigger"]: json.loads(line) for line in lines}
        assert got["after-enroll"]["agent"]["agent_id"] == agent.agent_id
        assert "token" not in json.dumps(got["after-enroll"])
        assert got["agent-online"]["agent"]["agent_id"] == agent.agent_id
    finally:
        agent.kill()


def test_a_thousand_runs_to_a_down_target_are_kept_and_delivered_once_it_is_up(
        tetherd: Tetherd, ca: trustme.CA) -> None:
    port = free_port()  # nothing listens there yet
    fingerprint_target = WebTarget(ca)  # for the certificate's fingerprint only
    fingerprint_target.close()
    url = f"https://127.0.0.1:{port}/hook"
    hook(tetherd, "down", "--trigger", "after-task", "--url", url, "--fingerprint", fingerprint_target.fingerprint,
         "--timeout", "2")

    async def create(n: int) -> list[int]:
        async with ConsoleClient(tetherd.url, tetherd.admin_token) as client:
            return [(await client.call("task.create", {"command": "os_version", "all": True}))["task_id"]
                    for _ in range(n)]

    ids = asyncio.run(create(1000))
    failing = wait_until(lambda: [r for r in runs(tetherd, "down") if r["outcome"] == "error"][:2] if
                         len([r for r in runs(tetherd, "down") if r["outcome"] == "error"]) >= 2 else None,
                         timeout=30, what="two failed attempts")
    assert all("Connect" in r["message"] or "refused" in r["message"] for r in failing)
    assert tetherd.ctl("hooks", "show", "down")[1]["pending"] == 1000
    assert tetherd.metrics()["tether_hook_outbox_pending"] == 1000
    # Probed, not hammered: a round of at most hook_concurrency (4) runs per backoff step (1, 2, 4 ... s),
    # not a try of each of the 1000 queued runs.
    tried = tetherd.ctl("hooks", "runs", "down", "--limit", "1000")[1]
    assert 2 <= len(tried) < 100 and {r["outcome"] for r in tried} == {"error"}
    target = WebTarget(ca, port, fingerprint_target.cert)  # the target comes up
    try:
        got = target.received.wait(lambda items: len({json.loads(i["body"])["task"]["task_id"] for i in items}) >= 1000,
                                   timeout=120, what="all 1000 runs")
        assert {json.loads(i["body"])["task"]["task_id"] for i in got} == set(ids)
        wait_until(lambda: tetherd.ctl("hooks", "show", "down")[1]["pending"] == 0, what="an empty outbox")
    finally:
        target.close()


def test_after_task_done_and_agent_offline(tetherd: Tetherd, make_agent: Any, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    recorder(tetherd, seen)
    hook(tetherd, "done", "--trigger", "after-task-done", "--script", "seen")
    hook(tetherd, "offline", "--trigger", "agent-offline", "--script", "seen")
    one, two = make_agent("d1", "pair", start=True), make_agent("d2", "pair", start=True)
    task_id = tetherd.task("record --n 1", "--tag", "pair")
    tetherd.ctl("wait", str(task_id), "--timeout", "60")

    def by_trigger() -> dict[str, list[dict[str, Any]]]:
        return _by_trigger(seen)

    done = wait_until(lambda: by_trigger().get("after-task-done"), what="after-task-done")
    assert len(done) == 1 and done[0]["task"]["task_id"] == task_id
    assert done[0]["task"]["counts"] == {"done": 2}
    assert sorted(d["agent_id"] for d in done[0]["task"]["deliveries"]) == sorted([one.agent_id, two.agent_id])
    one.kill()
    offline = wait_until(lambda: by_trigger().get("agent-offline"), what="agent-offline")
    assert [p["agent"]["agent_id"] for p in offline] == [one.agent_id]


def test_an_alert_hook_fires_for_a_new_distinct_alert_not_a_repeat(tetherd: Tetherd, make_agent: Any,
                                                                   tmp_path: Path) -> None:
    import subprocess

    from harness import BIN

    seen = tmp_path / "alerts"
    recorder(tetherd, seen)
    hook(tetherd, "alerts", "--trigger", "alert", "--script", "seen")
    agent = make_agent("al")

    def raise_alert(name: str) -> None:
        text = json.dumps({"kind": "integrity", "name": name, "path": "/etc/ssh/sshd_config", "severity": "high"})
        done = subprocess.run([str(BIN / "tether-agent"), "alert", "--state-dir", str(agent.state_dir), "--json",
                               text], capture_output=True, text=True, env=agent.env, timeout=60)
        assert done.returncode == 0, done.stderr

    raise_alert("sshd_config changed")
    raise_alert("sshd_config changed")  # a repeat: counted, not a new alert
    raise_alert("hosts changed")
    wait_until(lambda: sum(a["count"] for a in tetherd.ctl("alerts")[1]["alerts"]) == 3, what="three copies")
    got = wait_until(lambda: seen.exists() and len(_lines(seen)) >= 2 and _lines(seen), what="two alert runs")
    wait_until(lambda: tetherd.ctl("hooks", "show", "alerts")[1]["pending"] == 0, what="no run pending")
    payloads = [json.loads(line) for line in _lines(seen)]
    assert sorted(p["alert"]["name"] for p in payloads) == ["hosts changed", "sshd_config changed"], got
    assert all(p["trigger"] == "alert" and p["agent"]["agent_id"] == agent.agent_id and
               p["alert"]["severity"] == "high" for p in payloads)


def test_config_drift_and_agent_replaced_hooks(tetherd: Tetherd, make_agent: Any, tmp_path: Path) -> None:
    import subprocess

    from harness import BIN

    seen = tmp_path / "fleet"
    recorder(tetherd, seen)
    hook(tetherd, "drift", "--trigger", "config-drift", "--script", "seen")
    hook(tetherd, "replaced", "--trigger", "agent-replaced", "--script", "seen")
    agent = make_agent("cfg")
    old_id = agent.agent_id
    tetherd.ctl("config", "set", "--agent", old_id, "log_level=debug")
    agent.start()

    def by_trigger() -> dict[str, list[dict[str, Any]]]:
        return _by_trigger(seen)

    drift = wait_until(lambda: by_trigger().get("config-drift"), what="config-drift")
    assert drift[0]["agent"]["agent_id"] == old_id and drift[0]["config"]["desired"]["log_level"] == "debug"
    assert drift[0]["config"]["desired_sha256"] != drift[0]["config"]["reported_sha256"]
    agent.kill()
    again = subprocess.run(
        [str(BIN / "tether-agent"), "enroll", "--server", tetherd.url, "--key", tetherd.enroll_key,
         "--state-dir", str(agent.state_dir), "--machine-uuid", "re-imaged-machine", "--json"],
        capture_output=True, text=True, env=agent.env, timeout=30)
    assert again.returncode == 0, again.stderr
    new_id = json.loads(again.stdout)["agent_id"]
    replaced = wait_until(lambda: by_trigger().get("agent-replaced"), what="agent-replaced")
    assert replaced[0]["agent"]["agent_id"] == new_id and replaced[0]["replaced"]["agent_id"] == old_id
    assert replaced[0]["agent"]["machine_uuid"] == "re-imaged-machine"
