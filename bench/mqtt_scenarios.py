"""``mqtt-drain`` and ``mqtt-reconnect``: tether's delivery workloads on Mosquitto + paho-mqtt.

The same shape as ``drain`` / ``reconnect``: ``agents`` persistent sessions (MQTT 3.1.1,
``clean_session=False``), each subscribed at QoS 1 to ``tasks/<id>`` before the run;
``per_agent`` tasks published to each topic at QoS 1 while the subscriber is offline (the
payload is the tether ``task`` frame the agent would be pushed, same args); one more
persistent session, offline during the run, subscribed to ``results/#`` at QoS 1 so
Mosquitto has to keep every result, as tetherd stores them. Then every subscriber
connects at once (worker processes, barrier) and the clock runs until the broker has
PUBACKed every result — the MQTT counterpart of "result committed" (Mosquitto answers
PUBACK once the message is queued for the results session, in memory).

Figures use the tether scenarios' names where they mean the same thing
(``deliveries_per_s``, ``connect_*``, ``first_task_*``), ``broker_*`` for Mosquitto's own.
"""

from __future__ import annotations

import collections
import os
import time
from typing import Any

from paho.mqtt.client import CallbackAPIVersion, Client, MQTTv311

from .mosquitto import Mosquitto, MosquittoError
from .mqtt_fleet import MqttFleet, MqttFleetError, SelectorLoop, connect_all, task_payloads
from .scenarios import (
    POLL_INTERVAL,
    BenchError,
    Options,
    _ms,
    histogram,
    listen_drops,
    machine_busy_seconds,
    percentile,
)

MIB = 1024 * 1024
SETUP_TIMEOUT = 300.0
RESULTS_SESSION = "bench-results"


def _plain(client_id: str, *, clean: bool) -> Client:
    return Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean, protocol=MQTTv311)


def _sessions(broker: Mosquitto, subscriptions: dict[str, str]) -> None:
    """Create a persistent session per client id, subscribed to its topic at QoS 1, and leave."""
    loop = SelectorLoop()
    problems: collections.Counter[str] = collections.Counter()
    connected: set[str] = set()
    subscribed: set[str] = set()
    clients = []
    for client_id, topic in subscriptions.items():
        c = _plain(client_id, clean=False)

        def on_connect(client: Client, userdata: Any, flags: Any, reason: Any, props: Any,
                       cid: str = client_id, topic: str = topic) -> None:
            connected.add(cid)
            client.subscribe(topic, qos=1)

        def on_subscribe(client: Client, userdata: Any, mid: int, reasons: Any, props: Any, cid: str = client_id) -> None:
            subscribed.add(cid)

        c.on_connect, c.on_subscribe = on_connect, on_subscribe
        clients.append(c)
    deadline = time.monotonic() + SETUP_TIMEOUT
    threads = connect_all(clients, broker.host, broker.port, loop, problems)
    if not loop.run_until(lambda: len(subscribed) == len(clients), deadline):
        raise BenchError(f"only {len(subscribed)}/{len(clients)} MQTT sessions subscribed ({dict(problems)})")
    for t in threads:
        t.join(timeout=10)
    for c in clients:
        c.disconnect()
    loop.run_until(lambda: all(c.socket() is None for c in clients), deadline)
    loop.close()


def _publish(broker: Mosquitto, topics: list[str], payloads: list[bytes]) -> float:
    """Publish every payload to every topic at QoS 1; return when all are PUBACKed (seconds)."""
    loop = SelectorLoop()
    acked = 0
    total = len(topics) * len(payloads)

    def on_publish(client: Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        nonlocal acked
        acked += 1

    pub = _plain("bench-publisher", clean=True)
    pub.max_inflight_messages_set(1000)
    pub.max_queued_messages_set(0)
    pub.on_publish = on_publish
    t = time.monotonic()
    deadline = t + SETUP_TIMEOUT
    for thread in connect_all([pub], broker.host, broker.port, loop, collections.Counter()):
        thread.join(timeout=30)
    loop.run_until(lambda: pub.is_connected(), deadline)
    for topic in topics:  # paho queues what the in-flight limit holds back; the loop sends it
        for payload in payloads:
            pub.publish(topic, payload, qos=1)
    if not loop.run_until(lambda: acked >= total, deadline):
        raise BenchError(f"only {acked}/{total} setup messages were PUBACKed by mosquitto")
    seconds = time.monotonic() - t
    pub.disconnect()
    loop.run_until(lambda: pub.socket() is None, time.monotonic() + 5.0)
    loop.close()
    return seconds


def run_mqtt_delivery(opts: Options) -> dict[str, Any]:
    total = opts.agents * opts.per_agent
    ids = [f"bench-{i:06d}" for i in range(opts.agents)]
    try:
        broker = Mosquitto().__enter__()
    except MosquittoError as exc:
        raise BenchError(str(exc)) from None
    with broker:
        t = time.monotonic()
        _sessions(broker, {RESULTS_SESSION: "results/#", **{cid: f"tasks/{cid}" for cid in ids}})
        sessions_s = time.monotonic() - t
        queue_s = _publish(broker, [f"tasks/{cid}" for cid in ids], task_payloads(opts.per_agent, opts.arg_bytes))
        rss_before = broker.rss()
        peak = 0
        fleet = MqttFleet(broker.host, broker.port, ids, opts.per_agent, opts.procs, opts.timeout)
        fleet.start()
        results: dict[int, dict[str, Any]] = {}
        try:
            drops0 = listen_drops()
            busy0 = machine_busy_seconds()
            cpu0 = broker.cpu_seconds()
            load = os.getloadavg()[0]
            go = fleet.go()
            deadline = go + opts.timeout + 30
            samples: list[tuple[float, float, float]] = [(go, cpu0, busy0)]
            while len(results) < fleet.procs:
                got = fleet.poll(POLL_INTERVAL)
                peak = max(peak, broker.rss())
                samples.append((time.monotonic(), broker.cpu_seconds(), machine_busy_seconds()))
                if got is not None:
                    results[got[0]] = got[1]
                    continue
                if not broker.alive():
                    raise BenchError(f"mosquitto exited:\n{broker.log_tail()}")
                if fleet.died(set(results)):
                    raise BenchError("an MQTT fleet worker died without results (see its traceback above)")
                if time.monotonic() > deadline:
                    raise BenchError(f"MQTT run not finished within the deadline ({len(results)}/{fleet.procs} workers)")
            drops1 = listen_drops()
            rss_end = broker.rss()
        except MqttFleetError as exc:
            raise BenchError(str(exc)) from None
        finally:
            fleet.close()
        log_problems = broker.log_levels()
        exit_code = broker.stop()
    if any(r.get("aborted") for r in results.values()):
        raise BenchError("an MQTT worker gave up at the start line")
    workers = [results[i] for i in sorted(results)]
    done = [d for r in workers for d in r["done"]]
    if any(d is None for d in done):
        missing = sum(1 for d in done if d is None)
        raise BenchError(f"{missing} MQTT clients did not get every result PUBACKed "
                         f"(received {sum(r['received'] for r in workers)}/{total}, problems "
                         f"{[r['problems'] for r in workers]})")
    end = max(d for d in done if d is not None)
    seconds = end - go
    # CPU up to the first sample after the last client was done (the workers go on to disconnect)
    _, cpu_at_end, busy_at_end = next((s for s in samples if s[0] >= end), samples[-1])
    cpu_window = max(seconds, next((s[0] for s in samples if s[0] >= end), samples[-1][0]) - go)
    connect: list[float] = []
    first: list[float] = []
    for r in workers:
        for c, f in zip(r["connected"], r["first_msg"], strict=True):
            if c is not None:
                connect.append(c - r["go"])
                if f is not None:
                    first.append(f - c)
    problems: collections.Counter[str] = collections.Counter()
    for r in workers:
        problems.update(r["problems"])
    agents_cpu = sum(r["cpu_seconds"] for r in workers)
    return {
        "deliveries_per_s": round(total / seconds, 1),
        "seconds": round(seconds, 3),
        "deliveries_done": sum(r["acked"] for r in workers),
        "received": sum(r["received"] for r in workers),
        "connect_p50_ms": _ms(percentile(connect, 50)),
        "connect_p99_ms": _ms(percentile(connect, 99)),
        "connect_max_ms": _ms(max(connect, default=None)),
        "first_task_p50_ms": _ms(percentile(first, 50)),
        "first_task_p99_ms": _ms(percentile(first, 99)),
        "first_task_max_ms": _ms(max(first, default=None)),
        "agents_connected": len(connect),
        "duplicates_received": sum(r["duplicates"] for r in workers),
        "reconnects": sum(r["reconnects"] for r in workers),
        "start_skew_ms": _ms(max(r["go"] for r in workers) - go),
        "broker_rss_before_mib": round(rss_before / MIB, 1),
        "broker_rss_peak_mib": round(max(peak, rss_end) / MIB, 1),
        "broker_rss_end_mib": round(rss_end / MIB, 1),
        "broker_cpu_percent": round(100.0 * (cpu_at_end - cpu0) / cpu_window, 1),
        # The server's own cost, whatever else shares the machine (the clients run here too).
        "server_cpu_us_per_delivery": round(1e6 * (cpu_at_end - cpu0) / total, 1) if total else None,
        "agents_cpu_percent": round(100.0 * agents_cpu / seconds, 1),
        "others_cpu_percent": round(100.0 * ((busy_at_end - busy0) - (cpu_at_end - cpu0) - agents_cpu) / cpu_window, 1),
        "loadavg_1m_before": round(load, 2),
        "connect_histogram": histogram(connect),
        "listen_overflows": {k: drops1[k] - drops0[k] for k in drops1 if k in drops0},
        "client_problems": dict(problems),
        "broker_log_problems": log_problems,
        "broker_exit_code": exit_code,
        "sessions_setup_s": round(sessions_s, 3),
        "queue_s": round(queue_s, 3),
        "queue_tasks_per_s": round(total / queue_s, 1),
        "broker_settings": {k: v for k, v in broker.settings.items() if k not in ("log_dest", "persistence_location")},
        "monotonic": {"go": go, "end": end},
    }


MQTT_SCENARIOS: dict[str, dict[str, Any]] = {
    "mqtt-drain": {"run": run_mqtt_delivery, "agents": 1, "per_agent": 20_000, "procs": 1, "arg_bytes": 200,
                   "what": "Mosquitto + paho-mqtt, QoS 1, persistent session: 1 subscriber comes online with "
                           "its queue, publishes a QoS 1 result per task"},
    "mqtt-reconnect": {"run": run_mqtt_delivery, "agents": 1000, "per_agent": 20, "procs": 2, "arg_bytes": 0,
                       "what": "Mosquitto + paho-mqtt, QoS 1, persistent sessions: every subscriber connects "
                               "at once with 20 queued, a QoS 1 result per task"},
}
