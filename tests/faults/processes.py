"""`lkps serve` replicas as real processes, for the fault tests.

Builds on tests/cli/processes.py (the interpreter command line, free ports, a clean
environment, `run_lkps`). A replica here differs from `lkps_process` there in what the
fault tests need: several at once, each logging to its own file, in a process group of
its own (so that SIGKILL takes its worker processes with it, as when a container is
killed), and stopped by the test when and how it chooses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx

from tests.cli.processes import LKPS, clean_environment, free_port

READY_TIMEOUT = 60.0  # imports alone take a few seconds on a busy 2-core machine
STOP_TIMEOUT = 30.0


class Replica:
    """One `lkps serve` (its uvicorn parent and any worker processes)."""

    def __init__(self, name: str, env: Mapping[str, str], workdir: Path) -> None:
        self.name = name
        self.port = int(env["LKPS_PORT"])
        self.env = dict(env)
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self._log: IO[str] | None = None
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Replica:
        """Start (or, after it died, start again) on the same port and log file."""
        if self._log is not None:
            self._log.close()
        self._log = self.log_path.open("a")  # O_APPEND: workers share it
        self.process = subprocess.Popen(
            [*LKPS, "serve"],
            env=self.env,
            cwd=self.workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: see `kill`
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, "start the replica first"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until GET /api/health/ready answers 200 (from some worker)."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_text()}")
            try:
                if httpx.get(f"{self.url}/api/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready in {timeout:.0f} s:\n{self.log_text()}")
            time.sleep(0.1)

    def process_ids(self) -> set[int]:
        """The uvicorn parent and its descendants (the worker processes), now."""
        if not self.running:
            return set()
        return descendants(self.pid)

    def terminate(self) -> None:
        """SIGTERM to the uvicorn parent, as a process manager stops a service; the
        parent stops its workers itself."""
        if self.running:
            os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to every process of the replica at once (a container killed).

        Safe against pid reuse: the group leader is not reaped until `wait`, so while
        `poll()` says it runs its group id is still ours."""
        if self.running:
            os.killpg(self.pid, signal.SIGKILL)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL for the whole group if it does not end in time."""
        if self.process is None:
            return
        if self.running:
            self.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_size(self) -> int:
        """Where the log ends now: `log_text(since=...)` reads from there."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_text(self, since: int = 0) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")


def descendants(root: int) -> set[int]:
    """`root` and every process below it, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, pending = set(), [root]
    while pending:
        pid = pending.pop()
        found.add(pid)
        pending += children.get(pid, [])
    return found


def serve_environment(
    *,
    tenant_id: str,
    audience: str,
    jwks_url: str,
    database_url: str,
    livekit_key: str,
    livekit_secret: str,
    authz_file: Path | None = None,
    **overrides: str,
) -> dict[str, str]:
    """A non-dev `lkps serve` on a free port of 127.0.0.1. Rate limits are off (the load
    is the test's own, and every response must be one the test can account for); the
    pool is small, because the PostgreSQL server is shared with other tests."""
    env = clean_environment(
        LKPS_ENV="np",
        LKPS_HOST="127.0.0.1",
        LKPS_PORT=str(free_port()),
        LKPS_METRICS_PORT="0",
        LKPS_LIVEKIT_URL="wss://livekit.test.example",
        LKPS_LIVEKIT_API_KEY=livekit_key,
        LKPS_LIVEKIT_API_SECRET=livekit_secret,
        LKPS_ENTRA_TENANT_ID=tenant_id,
        LKPS_ENTRA_AUDIENCES=audience,
        LKPS_ENTRA_JWKS_URL=jwks_url,
        LKPS_DATABASE_URL=database_url,
        LKPS_DATABASE_POOL_SIZE="4",
        LKPS_RATE_LIMIT_SESSION_PER_CLIENT="0",
        LKPS_RATE_LIMIT_SESSION_PER_USER="0",
        LKPS_RATE_LIMIT_REGISTER_PER_AGENT="0",
        LKPS_WORKERS="1",
        LKPS_LOG_LEVEL="INFO",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if authz_file is not None:
        env |= {"LKPS_AUTHZ_SOURCE": "file", "LKPS_AUTHZ_FILE": str(authz_file)}
    env.update(overrides)
    return env


@contextmanager
def replicas(envs: Mapping[str, Mapping[str, str]], workdir: Path) -> Iterator[dict[str, Replica]]:
    """Start every replica at once (their start-up is mostly imports, which then
    overlap instead of queuing), wait until each is ready, and stop whatever still runs
    at the end."""
    started: dict[str, Replica] = {}
    try:
        for name, env in envs.items():
            if int(env.get("LKPS_WORKERS", "1")) > 1:
                # Each replica's own folder for its workers' metrics samples, removed
                # with the test's tmp_path (lkps serve would make one under /tmp).
                metrics = workdir / f"{name}-metrics"
                metrics.mkdir(exist_ok=True)
                env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
            started[name] = Replica(name, env, workdir).start()
        for replica in started.values():
            replica.wait_ready()
        yield started
    finally:
        stop_all(started.values())


def stop_all(running: Iterable[Replica]) -> None:
    for replica in running:
        replica.terminate()
    for replica in running:
        replica.stop()
