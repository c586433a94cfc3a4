"""`/api/health` latency while requests with huge headers are being sent (issue 13).

    python3 -m uv run python bench/headers.py
    python3 -m uv run python bench/headers.py --before /tmp/lkps-before/packages/server/src

Starts `lkps dev` (SQLite, no outside services) on a free port of 127.0.0.1, once per
uvicorn parser (`LKPS_HTTP_IMPLEMENTATION`), and for each scenario:
- `idle`: health alone;
- `1MB`: a client sends requests with one 1 MB header, one after another, in 64 KiB
  chunks as fast as the server takes them;
- `100MB`: the same with a 100 MB header;
while another client asks `GET /api/health` `--requests` times (or for `--seconds`), one
at a time on one kept-alive connection. Printed: health p50 / p99 / max, and for the big requests how many
finished, their answers, the bytes the client had sent when the server answered or
closed, and how long each took.

`--before DIR` also runs the server with the `lkps` package found in DIR (put first on
PYTHONPATH; e.g. `git archive <commit> packages/server/src | tar -x -C /tmp/lkps-before`
for the code before the limits). That code has no LKPS_HTTP_IMPLEMENTATION, so it runs
httptools only.

Wall-clock figures: on a shared machine they move with its load; compare rows of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

CHUNK = 65_536
SCENARIOS = {"idle": 0, "1MB": 1_000_000, "100MB": 100_000_000}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def lkps_dev(implementation: str, pythonpath: str | None) -> Iterator[int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LKPS_")}
    env |= {"LKPS_HTTP_IMPLEMENTATION": implementation, "LKPS_LOG_LEVEL": "ERROR"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    with tempfile.TemporaryDirectory() as state:
        process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "lkps", "dev", "--port", str(port), "--state-dir", state],
            env=env,
            cwd=state,
            stdout=subprocess.DEVNULL,
            stderr=(Path(tempfile.gettempdir()) / f"bench-headers-{port}.log").open("w"),
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"http://127.0.0.1:{port}/api/health").status_code == 200:
                        break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("lkps dev did not start")
                time.sleep(0.2)
            yield port
        finally:
            process.terminate()
            process.wait(timeout=30)


@dataclass
class BigRequests:
    answers: list[str] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    health_resets: int = 0


def send_big(port: int, size: int, stop: threading.Event, results: BigRequests) -> None:
    """Requests with one `size`-byte header, one after another, until `stop`."""
    while not stop.is_set():
        try:
            one_big(port, size, stop, results)
        except OSError as exc:  # e.g. the server no longer accepts connections
            results.answers.append(type(exc).__name__)
            return


def one_big(port: int, size: int, stop: threading.Event, results: BigRequests) -> None:
    """One request with a `size`-byte header, streamed until the server answers or
    closes (or `stop`: then "unfinished")."""
    start = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Big: "
    filler = b"a" * CHUNK
    began, sent, received, answer = time.perf_counter(), 0, b"", "unfinished"
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(start)
            while sent < size and not stop.is_set():
                if select.select([sock], [], [], 0)[0]:
                    break  # answered (or closed) before the end
                sock.sendall(filler)
                sent += CHUNK
            if sent >= size:
                sock.sendall(b"\r\n\r\n")
        if sent >= size or select.select([sock], [], [], 0)[0]:
            with contextlib.suppress(ConnectionResetError, TimeoutError):
                while chunk := sock.recv(65_536):
                    received += chunk
            answer = received.split(b" ", 2)[1].decode() if received else "closed"
    results.answers.append(answer)
    results.sent.append(sent)
    results.seconds.append(time.perf_counter() - began)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def measure(port: int, size: int, requests: int, seconds: float) -> tuple[list[float], BigRequests]:
    stop, big = threading.Event(), BigRequests()
    sender = threading.Thread(target=send_big, args=(port, size, stop, big))
    latencies = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        client.get("/api/health")
        if size:
            sender.start()
            time.sleep(0.2)  # the first big request under way
        ends = time.monotonic() + seconds
        for _ in range(requests):
            if time.monotonic() > ends:
                break
            began = time.perf_counter()
            try:
                status = client.get("/api/health").status_code
            except httpx.TransportError:
                # uvicorn closes a kept-alive connection idle for 5 s: after a stall that
                # long, the request sent meanwhile is reset. Asked again; the time counts.
                big.health_resets += 1
                status = client.get("/api/health").status_code
            assert status == 200
            latencies.append((time.perf_counter() - began) * 1000)
    stop.set()
    if size:
        sender.join()
    return latencies, big


def report(label: str, latencies: list[float], big: BigRequests) -> None:
    line = (
        f"{label:<24} {len(latencies):4d} health: p50 {statistics.median(latencies):6.1f} ms  "
        f"p99 {percentile(latencies, 0.99):7.1f} ms  max {max(latencies):7.1f} ms"
    )
    if big.health_resets:
        line += f" ({big.health_resets} reset after a stall)"
    if big.answers:
        answers = ", ".join(f"{a} x{big.answers.count(a)}" for a in sorted(set(big.answers)))
        line += (
            f"  | big requests: {answers}; sent at answer/close median "
            f"{statistics.median(big.sent) / 1e6:.2f} MB (max {max(big.sent) / 1e6:.2f}); "
            f"each {statistics.median(big.seconds) * 1000:.0f} ms median"
        )
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="health requests per row")
    parser.add_argument("--seconds", type=float, default=60, help="at most, per row")
    parser.add_argument("--before", help="server sources without the limits (PYTHONPATH)")
    args = parser.parse_args()
    servers = [("httptools", None, "limits"), ("h11", None, "limits")]
    if args.before:
        servers.insert(0, ("httptools", str(Path(args.before).resolve()), "before"))
    for implementation, pythonpath, version in servers:
        with lkps_dev(implementation, pythonpath) as port:
            for scenario, size in SCENARIOS.items():
                latencies, big = measure(port, size, args.requests, args.seconds)
                report(f"{version} {implementation} {scenario}", latencies, big)


if __name__ == "__main__":
    main()
