"""The agent gateway's own cost: CPU per relayed worker message and memory per relayed
connection, for the relay itself (protobuf checks, pumping, the observer calls) on
in-memory sockets. WebSocket framing (uvicorn, aiohttp) comes on top and is measured with
real workers in the next slice's 1,000-worker benchmark.

    python3 -m uv run python bench/gateway.py [--workers 1000] [--messages 20]

Each worker registers, then sends `--messages` UpdateWorkerStatus messages (what a
worker sends every 5 s); LiveKit's side answers the register and drains the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
import tracemalloc
import uuid

from livekit.protocol import agent as proto

from lkps.gateway import GatewayRelay, NoObserver, WorkerSession
from lkps.gateway.sockets import Closed, Frame, RelaySocket


class _End:
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Frame] = asyncio.Queue()
        self.peer: _End | None = None

    async def receive(self) -> Frame:
        return await self.inbox.get()

    async def send(self, data: bytes) -> None:
        assert self.peer is not None
        self.peer.inbox.put_nowait(data)

    async def close(self, code: int, reason: str) -> None:
        assert self.peer is not None
        self.peer.inbox.put_nowait(Closed(code, reason))


def _pipe() -> tuple[_End, _End]:
    a, b = _End(), _End()
    a.peer, b.peer = b, a
    return a, b


class _LiveKit:
    def __init__(self, expected: int) -> None:
        self.ends: list[_End] = []
        self.expected = expected
        self.all_connected = asyncio.Event()

    async def connect(self, url: str, token: str) -> RelaySocket:
        relay_end, livekit_end = _pipe()
        self.ends.append(livekit_end)
        if len(self.ends) == self.expected:
            self.all_connected.set()
        return relay_end


class _Refusals:
    async def refused(self, **_: object) -> None:
        raise AssertionError("no worker should be refused")


def _register(agent_id: str) -> bytes:
    message = proto.WorkerMessage()
    message.register.agent_name = agent_id
    return message.SerializeToString()


STATUS = proto.WorkerMessage(
    update_worker=proto.UpdateWorkerStatus(status=proto.WS_AVAILABLE, load=0.2)
).SerializeToString()


async def main(workers: int, messages: int) -> None:
    livekit = _LiveKit(workers)
    relay = GatewayRelay(
        livekit_url="ws://livekit.bench",
        worker_token=lambda agent_id: "token",
        connector=livekit,
        refusals=_Refusals(),
        observer=NoObserver(),
    )
    gc.collect()
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    ends, tasks = [], []
    for _ in range(workers):
        agent_id = str(uuid.uuid4())
        worker, relay_end = _pipe()
        tasks.append(
            asyncio.create_task(relay.serve(relay_end, WorkerSession(agent_id, "r", None)))
        )
        await worker.send(_register(agent_id))
        ends.append(worker)
    await livekit.all_connected.wait()
    for end in livekit.ends:
        await end.inbox.get()  # the register
    await asyncio.sleep(0.1)
    per_connection = (tracemalloc.get_traced_memory()[0] - baseline) / workers
    tracemalloc.stop()

    started_cpu, started = time.process_time(), time.perf_counter()
    for _ in range(messages):
        for worker in ends:
            await worker.send(STATUS)
        for end in livekit.ends:
            await end.inbox.get()
    cpu = time.process_time() - started_cpu
    wall = time.perf_counter() - started
    relayed = workers * messages
    for worker in ends:
        await worker.close(1000, "done")
    await asyncio.gather(*tasks)
    print(f"workers {workers}, status messages relayed {relayed:,}")
    print(f"relay memory per connection: {per_connection / 1024:.1f} KiB (tracemalloc)")
    print(f"CPU per relayed message: {cpu / relayed * 1e6:.1f} µs (incl. this driver)")
    print(f"messages/s on one core: {relayed / wall:,.0f}")
    # A worker reports every 5 s: the relay's share of a core for this many workers.
    print(f"core share at one status per 5 s: {cpu / relayed * workers / 5 * 100:.2f}%")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=20)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.workers, arguments.messages))
