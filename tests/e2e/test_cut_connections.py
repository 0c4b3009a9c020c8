"""Connections cut mid-frame: agents reach tetherd through a TCP proxy that closes both
sockets abruptly (RST) at seeded byte counts, usually inside a WebSocket frame. Nothing
the console was told of is lost, nothing runs twice.
"""

from __future__ import annotations

import asyncio
import collections
import random
import socket
import struct
import threading
from collections.abc import Callable

from harness import AgentProc, Tetherd

from tether.console import ConsoleClient

SEED = 1312


class CuttingProxy:
    """127.0.0.1:port -> tetherd; every connection is cut after a seeded number of bytes
    from tetherd (after its handshake), until ``cuts`` connections were cut."""

    def __init__(self, upstream_port: int, cuts: int, rng: random.Random) -> None:
        self.upstream_port = upstream_port
        self.cuts_left = cuts
        self.cut = 0
        self.rng = rng
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.sockets: list[socket.socket] = []
        self.armed = threading.Event()
        """Cut only once set (enrollment goes through uncut)."""
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets += (client, upstream)
            with self.lock:
                budget = self.rng.randint(300, 3000) if self.cuts_left > 0 and self.armed.is_set() else None
                if budget is not None:
                    self.cuts_left -= 1
            pair = (client, upstream)
            threading.Thread(target=self._pump, args=(upstream, client, budget, pair), daemon=True).start()
            threading.Thread(target=self._pump, args=(client, upstream, None, pair), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, budget: int | None,
              pair: tuple[socket.socket, socket.socket]) -> None:
        try:
            while data := src.recv(65536):
                if budget is not None and len(data) >= budget:
                    dst.sendall(data[: max(1, budget)])  # part of a frame, then gone
                    self._reset(pair)
                    with self.lock:
                        self.cut += 1
                    return
                if budget is not None:
                    budget -= len(data)
                dst.sendall(data)
        except OSError:
            pass
        self._reset(pair)

    @staticmethod
    def _reset(pair: tuple[socket.socket, socket.socket]) -> None:
        for s in pair:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
                s.shutdown(socket.SHUT_RD)  # wakes the other pump's recv, so the close below is the last
            except OSError:
                pass  # already shut, or the peer is gone
            finally:
                s.close()

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
        for s in self.sockets:  # the connections still open at the end
            s.close()


def test_connections_cut_mid_frame_lose_nothing_and_run_nothing_twice(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc], fault_log: Callable[..., None]
) -> None:
    rng = random.Random(SEED)
    proxy = CuttingProxy(tetherd.port, cuts=25, rng=rng)
    try:
        real_url = tetherd.url
        tetherd.url = f"ws://127.0.0.1:{proxy.port}"  # agents enroll, and so connect, through the proxy
        agents = [make_agent(f"x{i}") for i in range(5)]
        tetherd.url = real_url
        proxy.armed.set()
        created: dict[int, str] = {}

        async def create(n: int) -> None:
            async with ConsoleClient(tetherd.url, tetherd.admin_token) as console:
                for _ in range(n):
                    agent_id = rng.choice(agents).agent_id
                    answer = await console.call("task.create", {"command": "record --cut 1", "agent": agent_id})
                    created[answer["task_id"]] = agent_id

        asyncio.run(create(200))  # queued while offline: the first sessions get long bursts, then are cut
        for agent in agents:
            agent.start("--backoff-cap", "0.3")
        for _ in range(8):  # more waves while they are online, until enough connections were cut
            if proxy.cut >= 15:
                break
            asyncio.run(create(100))
        assert proxy.cut >= 10, proxy.cut

        async def wait_all() -> list[dict]:
            async with ConsoleClient(tetherd.url, tetherd.admin_token) as console:
                return list(await asyncio.gather(*(console.call("task.wait", {"task_id": t, "timeout": 60})
                                                   for t in created)))

        views = asyncio.run(wait_all())
    finally:
        proxy.close()
    runs = collections.Counter(r["task_id"] for agent in agents for r in agent.runs())
    print(f"cut {proxy.cut} connections mid-stream; {len(created)} tasks, {sum(runs.values())} runs")
    assert [t for t, n in runs.items() if n > 1] == []
    assert {v["deliveries"][0]["state"] for v in views} == {"done"}
    assert sorted(runs) == sorted(created)
    fault_log("Crashes", f"TCP connection reset at seeded byte counts, mostly inside a frame ({len(created)} tasks, "
              "5 agents behind a proxy)", proxy.cut, "every task done, each run exactly once")
