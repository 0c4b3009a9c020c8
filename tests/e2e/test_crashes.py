"""Nothing lost, nothing run twice: 1,000 tasks over 20 agent processes while tetherd is
killed with SIGKILL at random moments (seeded) and agents are killed and restarted too.

The kill delays and victims are seeded; what each kill interrupts depends on timing (a
create in flight, a push, an ack or a result). The invariant is checked at the end from
the agents' own execution logs and the daemon's answers: every task the console was told was created ran exactly once, on its agent, and
its result is stored; no task (told or not) ran twice.
"""

from __future__ import annotations

import asyncio
import collections
import random
import signal
import threading
from collections.abc import Callable

from harness import AgentProc, Tetherd

from tether.console import ConsoleClient, ConsoleError

SEED = 20261201
AGENTS = 20
ROUNDS = 10
PER_ROUND = 100
RESTARTED_WHILE_RUNNING = "agent restarted while the command was running"


async def create_until_killed(tetherd: Tetherd, agents: list[AgentProc], rng: random.Random,
                              created: dict[int, str], n: int) -> None:
    """Create ``n`` tasks for random agents; keep those the daemon confirmed. A kill of
    tetherd mid-way ends the round (the calls in flight are not counted as created)."""
    try:
        async with ConsoleClient(tetherd.url, tetherd.admin_token) as console:
            for start in range(0, n, 4):  # a few at a time, so a kill can land mid-way
                targets = [rng.choice(agents).agent_id for _ in range(min(4, n - start))]
                answers = await asyncio.gather(
                    *(console.call("task.create", {"command": f"record --r {rng.random()}", "agent": agent_id})
                      for agent_id in targets),
                    return_exceptions=True)
                for agent_id, answer in zip(targets, answers, strict=True):
                    if isinstance(answer, dict):
                        created[answer["task_id"]] = agent_id
                if any(isinstance(a, BaseException) for a in answers):
                    return
    except ConsoleError:
        return


async def wait_all(tetherd: Tetherd, task_ids: list[int]) -> dict[int, dict]:
    async with ConsoleClient(tetherd.url, tetherd.admin_token) as console:
        views = await asyncio.gather(*(console.call("task.wait", {"task_id": t, "timeout": 120}) for t in task_ids))
    return dict(zip(task_ids, views, strict=True))


def test_sigkills_of_tetherd_and_agents_lose_nothing_and_run_nothing_twice(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc], fault_log: Callable[..., None]
) -> None:
    rng = random.Random(SEED)
    agents = [make_agent(f"c{i:02d}") for i in range(AGENTS)]
    for agent in agents:
        agent.start("--backoff-cap", "0.5")
    created: dict[int, str] = {}
    kills = 0
    per_round: list[int] = []
    for _ in range(ROUNDS):
        killer = threading.Timer(rng.uniform(0.05, 0.6), tetherd.kill, (signal.SIGKILL,))
        victim = rng.choice(agents)  # an agent dies while tetherd is up and it is running commands
        agent_killer = threading.Timer(rng.uniform(0.05, 0.6), victim.kill, (signal.SIGKILL,))
        killer.start()
        agent_killer.start()
        asyncio.run(create_until_killed(tetherd, agents, rng, created, PER_ROUND))
        killer.join()
        agent_killer.join()
        kills += 1
        per_round.append(len(created) - sum(per_round))
        for agent in rng.sample([a for a in agents if a is not victim], 2):  # and while tetherd is down
            agent.kill(signal.SIGKILL)
        tetherd.start()
        for agent in agents:
            if agent.proc is None or agent.proc.poll() is not None:
                agent.start("--backoff-cap", "0.5")
    asyncio.run(create_until_killed(tetherd, agents, rng, created, 1000 - len(created)))  # top up to 1,000
    assert kills >= 10 and len(created) >= 1000
    assert sum(1 for n in per_round if n) >= ROUNDS // 2, per_round  # tasks were created between the kills
    print(f"created per round before its kill: {per_round}, then {len(created) - sum(per_round)}")

    views = asyncio.run(wait_all(tetherd, sorted(created)))
    runs: collections.Counter[int] = collections.Counter()
    ran_on: dict[int, set[str]] = collections.defaultdict(set)
    for agent in agents:
        for entry in agent.runs():
            runs[entry["task_id"]] += 1
            ran_on[entry["task_id"]].add(agent.agent_id)
    assert [t for t, n in runs.items() if n > 1] == []  # nothing ran twice, told or not
    outcomes = collections.Counter(views[t]["deliveries"][0]["state"] for t in created)
    print(f"outcomes: {dict(outcomes)}; runs logged: {sum(runs.values())}")
    for task_id, agent_id in created.items():
        (delivery,) = views[task_id]["deliveries"]
        assert delivery["agent_id"] == agent_id
        if delivery["state"] == "done":
            assert runs[task_id] == 1 and ran_on[task_id] == {agent_id}, (task_id, delivery)  # none lost
            assert delivery["result"]["recorded"]["r"], delivery  # its result is stored
        else:
            # The agent was killed while this command ran: it is reported, never run again.
            # Killed before the command's first line wrote the execution log, it shows no run.
            assert (delivery["state"], delivery["error"]) == ("failed", RESTARTED_WHILE_RUNNING), delivery
            assert runs[task_id] <= 1 and ran_on[task_id] <= {agent_id}, (task_id, delivery)
    fault_log("Crashes", f"tetherd SIGKILLed at seeded moments, some mid-create ({len(created)} tasks, "
              f"{AGENTS} agent processes)", kills,
              "every task the console was told of ran exactly once on its agent, result stored; none twice")
    fault_log("Crashes", "agent processes SIGKILLed, while tetherd is up (running commands) and while it is down",
              ROUNDS * 3, "same as above; a command killed mid-run is reported failed, never run again")
