"""Console RPC params: every method, every check, unknown methods and keys."""

from __future__ import annotations

from typing import Any

import pytest

from tether.protocol import ErrorCode, ProtocolError
from tether.protocol import console as rpc
from tether.protocol.methods import METHODS, check_role, parse_params


@pytest.mark.parametrize(
    ("method", "params", "expected"),
    [
        ("agents.list", {}, rpc.AgentsList()),
        ("agents.list", {"tag": "web", "online": True}, rpc.AgentsList(tag="web", online=True)),
        ("tag.add", {"agent_id": "a1", "tag": "web"}, rpc.TagChange(agent_id="a1", tag="web")),
        ("tag.add", {"agent_id": "a1", "tag": "x" * 64}, rpc.TagChange(agent_id="a1", tag="x" * 64)),
        ("tag.add", {"agent_id": "a1", "tag": "dc:paris-1.rack_2"}, rpc.TagChange(agent_id="a1", tag="dc:paris-1.rack_2")),
        # tag.rm removes any tag an agent carries, also one from before the tag rule
        ("tag.rm", {"agent_id": "a1", "tag": "x" * 128}, rpc.TagRemove(agent_id="a1", tag="x" * 128)),
        ("tag.rm", {"agent_id": "a1", "tag": "a,b c"}, rpc.TagRemove(agent_id="a1", tag="a,b c")),
        ("task.create", {"command": "os_version", "all": True}, rpc.TaskCreate(command="os_version", all=True)),
        ("task.create", {"command": "scan --deep", "args": {"n": 1}, "agent": "a1", "ttl": 1, "priority": 3},
         rpc.TaskCreate(command="scan --deep", args={"n": 1}, agent="a1", ttl=1, priority=3)),
        ("task.create", {"command": "x", "tag": "web", "ttl": rpc.MAX_TTL, "priority": 0},
         rpc.TaskCreate(command="x", tag="web", ttl=rpc.MAX_TTL, priority=0)),
        ("task.list", {}, rpc.TaskList()),
        ("task.list", {"tag": "web", "state": "all", "limit": 100_000}, rpc.TaskList(tag="web", state="all", limit=100_000)),
        ("task.get", {"task_id": 3}, rpc.TaskGet(task_id=3)),
        ("task.wait", {"task_id": 3}, rpc.TaskWait(task_id=3)),
        ("task.wait", {"task_id": 3, "timeout": 0}, rpc.TaskWait(task_id=3, timeout=0)),
        ("task.wait", {"task_id": 3, "timeout": 2.5}, rpc.TaskWait(task_id=3, timeout=2.5)),
        ("task.cancel", {"task_id": 3}, rpc.TaskCancel(task_id=3)),
        ("task.cancel", {"agent": "a1"}, rpc.TaskCancel(agent="a1")),
        ("task.cancel", {"tag": "web"}, rpc.TaskCancel(tag="web")),
        ("task.get", {"task_id": 3, "history": True}, rpc.TaskGet(task_id=3, history=True)),
        ("task.create", {"command": "scan --polling", "agent": "a1", "hide_polling_output": True},
         rpc.TaskCreate(command="scan --polling", agent="a1", hide_polling_output=True)),
        ("schedule.add", {"name": "every5", "command": "state", "tag": "linux", "every": 300.0},
         rpc.ScheduleAdd(name="every5", command="state", tag="linux", every=300.0)),
        ("schedule.add", {"name": "Nightly", "command": "scan", "all": True, "cron": "0 3 * * *",
                          "timezone": "Europe/Paris", "missed": "skip", "ttl": 3600, "priority": 2},
         rpc.ScheduleAdd(name="Nightly", command="scan", all=True, cron="0 3 * * *", timezone="Europe/Paris",
                         missed="skip", ttl=3600, priority=2)),
        ("schedule.list", {}, rpc.ScheduleList()),
        ("schedule.get", {"name": "every5"}, rpc.ScheduleName(name="every5")),
        ("schedule.pause", {"name": "every5"}, rpc.ScheduleName(name="every5")),
        ("schedule.resume", {"name": "every5"}, rpc.ScheduleName(name="every5")),
        ("schedule.rm", {"name": "every5"}, rpc.ScheduleName(name="every5")),
        ("token.create", {}, rpc.TokenCreate(role="operator")),
        ("token.create", {"role": "viewer", "label": "ci"}, rpc.TokenCreate(role="viewer", label="ci")),
        ("token.list", {}, rpc.Nothing()),
        ("token.revoke", {"token_id": 2}, rpc.TokenId(token_id=2)),
        ("key.create", {}, rpc.KeyCreate()),
        ("key.create", {"tags": ["web"], "expires_in": 3600.0, "uses": 3},
         rpc.KeyCreate(tags=["web"], expires_in=3600.0, uses=3)),
        ("key.list", {}, rpc.Nothing()),
        ("key.revoke", {"key_id": 2}, rpc.KeyId(key_id=2)),
        ("agent.revoke", {"agent_id": "a1"}, rpc.AgentRevoke(agent_id="a1")),
        ("agent.approve", {"agent_id": "a1"}, rpc.AgentId(agent_id="a1")),
        ("agent.merge", {"agent_id": "a1"}, rpc.AgentId(agent_id="a1")),
        ("agent.rm", {"agent_id": "a1"}, rpc.AgentId(agent_id="a1")),
        ("agents.list", {"all": True}, rpc.AgentsList(all=True)),
        ("agents.list", {"stale": 86400}, rpc.AgentsList(stale=86400)),
        ("agents.list", {"offline": True}, rpc.AgentsList(offline=True)),
        ("agent.get", {"agent_id": "a1"}, rpc.AgentShow(agent_id="a1")),
        ("config.set", {"tag": "web", "settings": {"state_interval": "2m", "app.on": True}},
         rpc.ConfigSet(tag="web", settings={"state_interval": 120.0, "app.on": True})),
        ("config.unset", {"agent": "a1", "keys": ["app.on"]}, rpc.ConfigUnset(agent="a1", keys=["app.on"])),
        ("agent.get", {"agent_id": "a1", "changes": 0}, rpc.AgentShow(agent_id="a1", changes=0)),
        ("key.create", {"tags": ["kiosk"], "allow_requested_tags": True},
         rpc.KeyCreate(tags=["kiosk"], allow_requested_tags=True)),
    ],
)
def test_valid_params(method: str, params: dict[str, Any], expected: rpc.Params) -> None:
    assert parse_params(method, params) == expected


def test_params_that_are_not_an_object_are_refused() -> None:
    with pytest.raises(ProtocolError, match="Expected `object`"):
        parse_params("task.get", [1])  # type: ignore[arg-type]


def test_defaults() -> None:
    created = parse_params("task.create", {"command": "x", "all": True})
    assert isinstance(created, rpc.TaskCreate)
    assert (created.ttl, created.priority, created.args) == (rpc.DEFAULT_TTL, 1, {})
    assert rpc.DEFAULT_TTL == 7 * 86_400


@pytest.mark.parametrize(("method", "params", "message"), [
    ("config.set", {"tag": "web", "settings": {"lissen": 1}}, "unknown configuration key 'lissen'"),
    ("config.set", {"tag": "web", "settings": {"state_interval": [1]}}, "state_interval must be a duration"),
    ("config.unset", {"tag": "web", "keys": ["nope"]}, "unknown configuration key 'nope'"),
])
def test_invalid_configuration_is_refused_when_set(method: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_params(method, params)
    assert refused.value.code is ErrorCode.INVALID_CONFIG and message in refused.value.message


def test_every_method_is_tested() -> None:
    assert set(METHODS) == {"agents.list", "tag.add", "tag.rm", "task.create", "task.list", "task.get",
                            "task.wait", "task.cancel", "schedule.add", "schedule.list", "schedule.get",
                            "schedule.pause", "schedule.resume", "schedule.rm", "token.create", "token.list",
                            "token.revoke", "key.create", "key.list", "key.revoke", "agent.revoke",
                            "agent.approve", "agent.merge", "agent.rm", "task.watch", "alerts.list", "alert.get",
                            "alert.ack", "hook.add", "hook.list", "hook.get", "hook.enable", "hook.disable",
                            "hook.rm", "hook.test", "hook.runs", "hook.fingerprint", "agent.get", "config.set",
                            "config.unset", "config.get", "config.drift"}


def test_unknown_method_names_the_known_ones() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_params("task.delete", {})
    assert caught.value.code is ErrorCode.UNKNOWN_METHOD
    assert caught.value.message == (
        "unknown method 'task.delete' (known: action, agent.approve, agent.get, agent.merge, agent.revoke, agent.rm, "
        "agents.list, alert.ack, alert.get, alerts.list, config.drift, config.get, config.set, config.unset, "
        "hook.add, hook.disable, hook.enable, hook.fingerprint, "
        "hook.get, hook.list, hook.rm, hook.runs, hook.test, key.create, key.list, key.revoke, schedule.add, schedule.get, schedule.list, schedule.pause, schedule.resume, schedule.rm, "
        "tag.add, tag.rm, task.cancel, task.create, task.get, task.list, task.wait, task.watch, token.create, token.list, "
        "token.revoke)"
    )


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        # unknown keys are refused by name, for every method
        *((m, {"task_id": 1, "agent_id": "a", "tag": "t", "command": "c", "all": True, "name": "n", "lissen": 1},
           "Object contains unknown field `") for m in METHODS),
        ("agents.list", {"tagg": "web"}, "agents.list: Object contains unknown field `tagg`"),
        ("task.create", {"command": "x", "all": True, "ttll": 5}, "unknown field `ttll`"),
        # wrong or missing fields
        ("tag.add", {"agent_id": "a1"}, "missing required field `tag`"),
        ("task.get", {}, "missing required field `task_id`"),
        ("task.get", {"task_id": "three"}, "task_id must be a whole number (a number or a string of digits)"),
        ("task.get", {"task_id": "-3"}, "task_id must be a whole number"),
        ("task.create", {"command": "x", "selector": "plat = linux"}, "invalid selector at column 6"),
        ("task.create", {"command": "x", "selector": "plat == x", "tag": "t"}, "give only one target"),
        ("task.create", {"command": "x", "all": True, "investigation_id": "i" * 257}, "investigation_id is longer"),
        ("task.list", {"selector": "(plat == x"}, "invalid selector at column 11"),
        ("task.create", {"command": "x", "all": True, "hide_polling_output": True, "show_polling_output": True},
         "give show_polling_output or hide_polling_output, not both"),
        ("task.cancel", {"selector": "plat =="}, "invalid selector at column 8"),
        ("task.create", {"command": "x", "all": True, "ttl": "60"}, "Expected `int`, got `str`"),
        ("task.create", {"command": "x", "all": True, "args": [1]}, "Expected `object`, got `array`"),
        ("task.create", {"command": "x", "all": True, "priority": True}, "Expected `int`, got `bool`"),
        ("agents.list", {"online": "yes"}, "Expected `bool`, got `str`"),
        ("alerts.list", {"within": 0}, "Expected `float` > 0.0 - at `$.within`"),
        ("alerts.list", {"kind": ""}, "Expected `str` of length >= 1 - at `$.kind`"),
        ("alert.ack", {"alert_id": "seven"}, "alert_id must be a whole number"),
        ("agents.list", {"online": True, "stale": 60}, "give online, or offline / stale, not both"),
        ("agents.list", {"online": True, "offline": True}, "give online, or offline / stale, not both"),
        ("agents.list", {"stale": -1}, "stale must be between 0 and"),
        ("agent.get", {"agent_id": "a1", "changes": 1001}, "changes must be between 0 and 1000"),
        ("agent.get", {}, "missing required field `agent_id`"),
        ("config.set", {"settings": {"app.x": 1}}, "give one of tag or agent"),
        ("config.set", {"tag": "a", "agent": "b", "settings": {"app.x": 1}}, "give one of tag or agent"),
        ("config.set", {"tag": "a b", "settings": {"app.x": 1}}, "invalid tag 'a b'"),
        ("config.set", {"tag": "web", "settings": {}}, "give at least one key=value to set"),
        ("config.unset", {"tag": "web", "keys": []}, "give 1 to 64 keys to unset"),
        # checks
        ("tag.add", {"agent_id": "a1", "tag": ""}, "invalid tag ''"),
        ("tag.add", {"agent_id": "a1", "tag": "x" * 65}, "a tag is 1-64 characters of letters, digits and"),
        ("tag.add", {"agent_id": "a1", "tag": "a b"}, "invalid tag 'a b': a tag is 1-64 characters"),
        ("tag.add", {"agent_id": "a1", "tag": "a,b"}, "invalid tag 'a,b'"),
        ("tag.add", {"agent_id": "a1", "tag": "-web"}, "starting with a letter or a digit"),
        ("tag.rm", {"agent_id": "a1", "tag": ""}, "tag is empty"),
        # the same rule for every tag target and filter
        ("agents.list", {"tag": "a b"}, "invalid tag 'a b'"),
        ("task.create", {"command": "x", "tag": "web\n"}, "invalid tag 'web\\n'"),
        ("task.list", {"tag": "x" * 65}, "invalid tag"),
        ("task.cancel", {"tag": "w\u00e9b"}, "invalid tag"),
        ("schedule.add", {"name": "s", "command": "x", "tag": "a;b", "every": 60.0}, "invalid tag 'a;b'"),
        ("key.create", {"tags": ["web", "bad tag"]}, "invalid tag 'bad tag'"),
        ("key.create", {"tags": [f"t{i}" for i in range(65)]}, "that is 65 tags; an agent carries at most 64"),
        ("task.create", {"command": "x"}, "give a target: agent, tag, selector or all"),
        ("task.create", {"command": "x", "all": False}, "give a target: agent, tag, selector or all"),
        ("task.create", {"command": "x", "agent": "a", "tag": "t"}, "give only one target"),
        ("task.create", {"command": "x", "agent": "a", "all": True}, "give only one target"),
        ("task.create", {"command": "x", "all": True, "ttl": 0}, "ttl must be between 1 and"),
        ("task.create", {"command": "x", "all": True, "ttl": rpc.MAX_TTL + 1}, "ttl must be between 1 and"),
        ("task.create", {"command": "x", "all": True, "priority": 4}, "priority must be 0-3"),
        ("task.create", {"command": "x", "all": True, "priority": -1}, "priority must be 0-3"),
        ("task.create", {"command": " \t", "all": True}, "command is empty"),
        ("task.create", {"command": "x", "all": True, "delay": -1.0}, "delay must be between 0 and"),
        ("task.create", {"command": "x", "all": True, "jitter": 1e12}, "jitter must be between 0 and"),
        ("task.create", {"command": "x", "all": True, "ttl": 600, "delay": 300.0, "jitter": 300.0},
         "delay + jitter (600 s) must be less than the ttl (600 s)"),
        ("task.list", {"agent": "a", "tag": "t"}, "give only one target"),
        ("task.list", {"limit": 0}, "limit must be between 1 and 100000"),
        ("task.list", {"limit": 100_001}, "limit must be between 1 and 100000"),
        ("task.wait", {"task_id": 1, "timeout": -0.5}, "timeout must not be negative"),
        ("task.cancel", {}, "give task_id, or one of agent, tag or selector"),
        ("task.cancel", {"agent": "a", "tag": "web"}, "give task_id, or one of agent, tag or selector"),
        ("schedule.add", {"name": "s", "command": "x", "all": True}, "give exactly one of every (seconds) or cron"),
        ("schedule.add", {"name": "s", "command": "x", "all": True, "every": 5.0, "cron": "* * * * *"},
         "give exactly one of every"),
        ("schedule.add", {"name": "s", "command": "x", "all": True, "every": -5.0}, "every must be more than 0"),
        ("schedule.add", {"name": "s", "command": "x", "all": True, "every": 1e12}, "every must be more than 0"),
        ("schedule.add", {"name": "s", "command": "x", "all": True, "cron": " "}, "cron is empty"),
        ("schedule.add", {"name": "s", "command": "x", "every": 60.0}, "give a target: agent, tag, selector or all"),
        ("schedule.add", {"name": "s", "command": "x", "all": True, "every": 60.0, "ttl": 0}, "ttl must be"),
        ("schedule.add", {"name": "s", "command": "x", "all": True, "every": 60.0, "missed": "twice"},
         "Invalid enum value 'twice'"),
        ("schedule.add", {"name": "a b", "command": "x", "all": True, "every": 60.0}, "invalid schedule name"),
        ("schedule.get", {"name": ""}, "invalid schedule name ''"),
        ("schedule.rm", {"name": "x" * 129}, "1-128 characters"),
        ("token.create", {"role": "root"}, "Invalid enum value 'root'"),
        ("token.create", {"label": "x" * 201}, "label is longer than 200"),
        ("token.revoke", {"token_id": "1x"}, "token_id must be a whole number"),
        ("token.revoke", {"token_id": 1.5}, "Expected `int`, got `float`"),
        ("key.create", {"expires_in": 0}, "expires_in must be more than 0"),
        ("key.create", {"uses": 0}, "uses must be a whole number"),
        ("key.revoke", {}, "missing required field `key_id`"),
        ("agent.revoke", {}, "missing required field `agent_id`"),
    ],
)
def test_invalid_params(method: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_params(method, params)
    assert caught.value.code is ErrorCode.INVALID_PARAMS
    assert message in caught.value.message


def test_priorities_are_armadito_levels() -> None:
    assert rpc.PRIORITIES == {"low": 0, "medium": 1, "high": 2, "urgent": 3}
    assert rpc.PRIORITY_NAMES[3] == "urgent"


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (None, ["acked", "delayed", "queued", "running", "sent", "waiting"]),
        ("pending", ["acked", "delayed", "queued", "running", "sent", "waiting"]),
        ("all", None),
        ("expired", ["expired"]),
    ],
)
def test_task_list_states(state: str | None, expected: list[str] | None) -> None:
    assert rpc.TaskList(state=state).states() == expected


def test_task_list_unknown_state_names_the_known_ones() -> None:
    with pytest.raises(ProtocolError) as err:
        parse_params("task.list", {"state": "finished"})
    assert err.value.code == ErrorCode.INVALID_PARAMS
    assert "unknown state 'finished'" in err.value.message and "cancelled" in err.value.message


VIEWER_METHODS = {"agents.list", "task.list", "task.get", "task.wait", "task.watch", "schedule.list", "schedule.get",
                  "alerts.list", "alert.get", "agent.get", "config.get", "config.drift"}
ADMIN_METHODS = {"token.create", "token.list", "token.revoke", "key.create", "key.list", "key.revoke", "agent.revoke",
                 "agent.approve", "agent.merge", "agent.rm", "hook.add", "hook.enable", "hook.disable", "hook.rm",
                 "hook.test", "hook.fingerprint"}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_roles(method: str) -> None:
    check_role("admin", method)
    if method in ADMIN_METHODS:
        for role in ("operator", "viewer"):
            with pytest.raises(ProtocolError) as err:
                check_role(role, method)
            assert err.value.code == ErrorCode.FORBIDDEN and "only an admin token" in err.value.message
        return
    check_role("operator", method)
    if method in VIEWER_METHODS:
        check_role("viewer", method)
    else:
        with pytest.raises(ProtocolError) as err:
            check_role("viewer", method)
        assert err.value.code == ErrorCode.FORBIDDEN and err.value.message == (
            f"a viewer token cannot call {method}; ask for an operator token")


def test_a_role_outside_roles_may_call_nothing() -> None:
    with pytest.raises(ProtocolError) as err:
        check_role("root", "agents.list")
    assert err.value.code == ErrorCode.FORBIDDEN


def test_no_agent_yet_says_what_happens_to_a_task_nobody_matches_now() -> None:
    from tether.protocol.console import no_agent_yet

    assert no_agent_yet("tag:linux") == ("no agent carries tag 'linux' yet (0 deliveries now): the task reaches "
                                         "agents tagged or enrolled with it before its ttl ends")
    assert no_agent_yet("all").startswith("no agent is enrolled yet (0 deliveries now)")
    assert no_agent_yet("tag:linux", schedule=True).endswith("each firing's task reaches the agents tagged or "
                                                            "enrolled with it before that task's ttl ends")
    assert no_agent_yet("selector:os == 'linux'") == no_agent_yet("agent:a1") == ""
