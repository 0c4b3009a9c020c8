"""Every scenario ``python -m bench`` knows: how to run one repeat, its defaults, its headline."""

from __future__ import annotations

from typing import Any

from .create import run_create
from .hooks import run_hooks
from .hostile import CASES as HOSTILE_CASES
from .hostile import run_hostile
from .mqtt_scenarios import MQTT_SCENARIOS
from .polls import run_polls
from .reports import run_reports
from .scenarios import HEADLINES as DELIVERY_HEADLINES
from .scenarios import SCENARIOS as DELIVERY_SCENARIOS
from .soak import run_soak
from .timers import run_timers

SCENARIOS: dict[str, dict[str, Any]] = {
    **DELIVERY_SCENARIOS,
    **MQTT_SCENARIOS,
    "create": {"run": run_create, "agents": 10_000, "per_agent": 200, "procs": 2, "arg_bytes": 0,
               "what": "task.create through the console: 100 agents x per-agent single-agent tasks, "
                       "then one tag task fanning out to --agents online agents"},
    "polls": {"run": run_polls, "agents": 200, "per_agent": 90, "procs": 2, "arg_bytes": 0,
              "what": "polling commands: --agents x --per-agent sequences, each run every 10 s "
                      "(~100,000 runs a minute by default: 18,000 sequences); tetherd CPU over one minute"},
    "reports": {"run": run_reports, "agents": 10_000, "per_agent": 1, "procs": 2, "arg_bytes": 0, "minutes": 2.0,
                "repeat": 1,
                "what": "every agent sends its state on open and every 5 minutes and one alert a minute (--per-agent: "
                        "distinct alerts each cycles through; 0: every one new): tetherd CPU, database growth and "
                        "state history rows per hour over a --minutes window"},
    "soak": {"run": run_soak, "agents": 1000, "per_agent": 0, "procs": 4, "arg_bytes": 0, "minutes": 10.0,
             "rate": 200, "ttl": 0, "repeat": 1,
             "what": "tasks flowing for --minutes at --rate a second (single agents, tags, all) while seeded agents "
                     "are cut off and reconnect: tetherd RSS start / end / peak against a bound, errors, all done"},
    "hostile": {"run": run_hostile, "agents": 1, "per_agent": 0, "procs": 1, "arg_bytes": 0, "repeat": 3,
                "cases": [case.name for case in HOSTILE_CASES],
                "what": "the worst single messages under max_frame_bytes (batches, id lists, outputs, args), one "
                        "per session: how long each holds tetherd's event loop (ping round trips of a probe)"},
    "hooks": {"run": run_hooks, "agents": 10, "per_agent": 300, "procs": 1, "arg_bytes": 0,
              "what": "task.create with 0, 1 and 5 after-task web hooks (also with their target down) and with one "
                      "before-task web hook: tasks/s, and how long the outbox takes to deliver"},
    "timers": {"run": run_timers, "agents": 1_000_000, "per_agent": 0, "procs": 1, "arg_bytes": 0,
               "what": "the timer wheel with --agents pending entries (bench/timers_wheel.py, own process)"},
}

HEADLINES: dict[str, tuple[str, ...]] = {
    **DELIVERY_HEADLINES,
    "mqtt-drain": ("deliveries_per_s", "seconds", "server_cpu_us_per_delivery", "broker_rss_peak_mib"),
    "mqtt-reconnect": ("deliveries_per_s", "seconds", "first_task_p99_ms", "server_cpu_us_per_delivery",
                       "broker_rss_peak_mib"),
    "create": ("single_tasks_per_s", "create_latency_p50_ms", "fanout_committed_s", "fanout_pushed_s",
               "fanout_done_s", "errors"),
    "polls": ("runs_per_minute", "tetherd_cpu_percent", "tetherd_cpu_ms_per_run", "asyncio_tasks_peak"),
    "reports": ("tetherd_cpu_percent", "tetherd_cpu_s_per_hour", "tetherd_cpu_us_per_alert",
                "tetherd_cpu_us_per_state", "db_growth_mib_per_hour", "alert_rows_per_hour", "history_rows_per_hour",
                "alerts_per_s_recorded", "states_per_s_sent"),
    "soak": ("verdict", "deliveries_created", "deliveries_done", "errors", "rss_start_mib", "rss_end_mib",
             "rss_peak_mib", "rss_bound_mib", "cuts"),
    "hostile": ("worst_lag_ms", "worst_case", "quiet_lag_ms"),
    "hooks": ("no_hook_tasks_per_s", "after_1_tasks_per_s", "after_5_tasks_per_s", "after_5_target_down_tasks_per_s",
              "before_1_tasks_per_s", "after_5_outbox_drained_s"),
    "timers": ("wheel_rss_mib", "wheel_traced_mib", "tick_idle_us", "tick_1000_due_ms"),
}


def headline(name: str) -> tuple[str, ...]:
    return HEADLINES.get(name) or HEADLINES[name.removeprefix("ws-")]
