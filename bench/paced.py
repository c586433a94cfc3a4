"""An open-loop, fixed-rate HTTP/1.1 load generator (the part of wrk2 that wrk lacks).

    python bench/paced.py --port 8080 --tokens tokens.txt --body '{...}' --rate 500 --duration 20

Request i is due at t0 + i/rate, whatever happened to the requests before it; its
latency is measured from that due time, not from when it was actually written, so a
server that stalls is charged for the whole queue it builds (no coordinated omission).
Requests go out over a pool of keep-alive connections; a request due while every
connection is busy waits for one (that wait counts as latency), and the pool grows up
to --max-connections.

It uses uvloop and hand-rolled HTTP/1.1 on raw asyncio streams (pre-encoded requests,
one header read and one body read per response), so its own cost per request is tens
of microseconds: `self_check` in its output reports its CPU time and how late it
sent requests relative to their due times, and the bare-server run shows the floor it
imposes on the latency it measures.

Prints one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import uvloop


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)  # from the due time, seconds
    service: list[float] = field(default_factory=list)  # from the actual write, seconds
    send_lag: list[float] = field(default_factory=list)  # write time - due time, seconds
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    connections_opened: int = 0


class Pool:
    def __init__(self, host: str, port: int, max_connections: int, stats: Stats) -> None:
        self._host = host
        self._port = port
        self._max = max_connections
        self._stats = stats
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self._open = 0

    async def fill(self, count: int) -> None:
        for _ in range(count):
            self._idle.put_nowait(await self._connect())

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self._open += 1
        self._stats.connections_opened += 1
        try:
            return await asyncio.open_connection(self._host, self._port, limit=1 << 20)
        except BaseException:
            self._open -= 1
            raise

    async def acquire(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._idle.empty() and self._open < self._max:
            return await self._connect()
        return await self._idle.get()

    def release(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self._idle.put_nowait(conn)

    def discard(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self._open -= 1
        conn[1].close()

    async def close(self) -> None:
        while not self._idle.empty():
            _, writer = self._idle.get_nowait()
            writer.close()


def build_requests(host: str, port: int, path: str, tokens: list[str], body: str) -> list[bytes]:
    payload = body.encode()
    return [
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        + payload
        for token in tokens
    ]


async def exchange(
    pool: Pool, request: bytes, due: float, stats: Stats, measured: bool, limit_s: float
) -> None:
    clock = time.perf_counter
    conn = None
    try:
        async with asyncio.timeout(limit_s):
            conn = await pool.acquire()
            reader, writer = conn
            sent = clock()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            close = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                lowered = name.strip().lower()
                if lowered == b"content-length":
                    length = int(value)
                elif lowered == b"connection" and value.strip().lower() == b"close":
                    close = True
            if length:
                await reader.readexactly(length)
        done = clock()
    except TimeoutError:
        stats.errors["timeout"] += 1
        if conn is not None:
            pool.discard(conn)
        return
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        stats.errors[type(exc).__name__] += 1
        if conn is not None:
            pool.discard(conn)
        return
    if close:
        pool.discard(conn)
    else:
        pool.release(conn)
    if measured:
        stats.statuses[status] += 1
        stats.latencies.append(done - due)
        stats.service.append(done - sent)
        stats.send_lag.append(sent - due)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def summary_ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(p: float) -> float:
        return round(percentile(ordered, p) * 1000, 3)

    return {
        "p50": at(50),
        "p90": at(90),
        "p99": at(99),
        "p999": at(99.9),
        "max": round(ordered[-1] * 1000, 3) if ordered else float("nan"),
        "mean": round(sum(ordered) / len(ordered) * 1000, 3) if ordered else float("nan"),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tokens = [line.strip() for line in open(args.tokens, encoding="utf-8") if line.strip()]  # noqa: SIM115, ASYNC230
    requests = build_requests(args.host, args.port, args.path, tokens, args.body)
    stats = Stats()
    pool = Pool(args.host, args.port, args.max_connections, stats)
    await pool.fill(args.connections)
    clock = time.perf_counter  # uvloop's loop.time() only has millisecond resolution
    interval = 1.0 / args.rate
    warmup = int(args.warmup * args.rate)
    total = warmup + int(args.duration * args.rate)
    tasks: set[asyncio.Task[None]] = set()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    start = clock() + 0.05
    measure_start = start + warmup * interval
    i = 0
    while i < total:
        now = clock()
        due = start + i * interval
        if due > now:
            await asyncio.sleep(due - now)
            continue
        # Everything due by now goes out at once; a late wake-up is charged as latency.
        while i < total and start + i * interval <= now:
            task = asyncio.create_task(
                exchange(
                    pool,
                    requests[i % len(requests)],
                    start + i * interval,
                    stats,
                    i >= warmup,
                    args.timeout,
                )
            )
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
    send_end = clock()
    if tasks:
        await asyncio.wait(tasks, timeout=args.timeout + 1)
    end = clock()
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    await pool.close()
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    measured_window = send_end - measure_start
    completed = len(stats.latencies)
    non_2xx = sum(n for status, n in stats.statuses.items() if not 200 <= status < 300)
    return {
        "target_rate": args.rate,
        "duration_s": round(measured_window, 3),
        "sent": total - warmup,
        "completed": completed,
        "achieved_rate": round(completed / measured_window, 1) if measured_window > 0 else 0.0,
        "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
        "non_2xx": non_2xx,
        "errors": dict(stats.errors),
        "latency_ms": summary_ms(stats.latencies),
        "service_time_ms": summary_ms(stats.service),
        "connections_opened": stats.connections_opened,
        "self_check": {
            "cpu_seconds": round(cpu, 3),
            "cpu_share_of_one_core": round(cpu / (end - start), 3),
            "send_lag_ms": summary_ms(stats.send_lag),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/api/session/start")
    parser.add_argument("--tokens", required=True, help="file of bearer tokens, one a line")
    parser.add_argument("--body", required=True, help="JSON body sent with every request")
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--connections", type=int, default=32, help="connections opened first")
    parser.add_argument("--max-connections", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    args = parser.parse_args()
    result = uvloop.run(run(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
