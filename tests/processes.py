"""Real processes on 127.0.0.1 for the tests: `lkps` commands, `lkps serve` replicas,
and (tests/e2e) the example agent.

`ManagedProcess` is what every long-running one shares: its own log file, its own
process group (so that SIGKILL takes its children with it, as when a container is
killed), and a stop the test chooses: SIGTERM once, SIGKILL for the whole group.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx

from tests.audit_keys import audit_key_for, shared_signing_key

LKPS = [sys.executable, "-m", "lkps"]
READY_TIMEOUT = 60.0  # imports alone take a few seconds on a busy 2-core machine
STOP_TIMEOUT = 30.0


LIVEKIT_AGENTS_HTTP_PORT = 8081  # livekit-agents' health endpoint under `start`


@contextmanager
def listening(port: int, host: str = "127.0.0.1") -> Iterator[bool]:
    """A socket listening on `host:port` for the block, so that a process binding the
    port (on any interface) fails. Yields False when something else already listens
    there: the port is taken either way, which is what the caller wants."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            yield False
            return
        sock.listen()
        yield True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_ready(
    ready: Callable[[], bool],
    *,
    running: Callable[[], bool],
    what: str,
    timeout: float,
    log: Callable[[], str],
) -> None:
    """Poll `ready` until it holds; fail at once if the process stopped running, or
    after `timeout`, with its log either way."""
    deadline = time.monotonic() + timeout
    while True:
        if not running():
            raise RuntimeError(f"{what} exited early:\n{log()}")
        if ready():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready in {timeout:.0f} s:\n{log()}")
        time.sleep(0.1)


def answers_200(url: str, timeout: float = 2) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.TransportError:
        return False


def clean_environment(**variables: str) -> dict[str, str]:
    """The parent's environment without any LKPS_ variable, plus `variables`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LKPS_")}
    env.update(variables)
    return env


def run_lkps(*args: str, env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LKPS, *args], env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=60
    )


@contextmanager
def lkps_process(
    *args: str, env: Mapping[str, str], cwd: Path, health_url: str
) -> Iterator[subprocess.Popen[str]]:
    """Start `lkps ARGS`, wait until `health_url` answers, stop it with SIGTERM."""
    with started_process(
        [*LKPS, *args],
        log_path=cwd / "lkps-process.log",
        ready=lambda: answers_200(health_url, timeout=1),
        what="lkps",
        timeout=READY_TIMEOUT,
        env=env,
        cwd=cwd,
    ) as process:
        yield process


@contextmanager
def started_process(
    command: Sequence[str],
    *,
    log_path: Path,
    ready: Callable[[], bool],
    what: str,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[str]]:
    """Start `command` with its output in `log_path`, wait until `ready`, and stop it
    with SIGTERM on leaving (SIGKILL if it has not exited 20 s later)."""
    with log_path.open("w") as log:
        process = subprocess.Popen(
            list(command),
            env=None if env is None else dict(env),
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait_until_ready(
                ready,
                running=lambda: process.poll() is None,
                what=what,
                timeout=timeout,
                log=log_path.read_text,
            )
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def process_output(cwd: Path) -> str:
    return (cwd / "lkps-process.log").read_text()


class ManagedProcess:
    """One long-running command with its log in `workdir/<name>.log`."""

    def __init__(
        self, name: str, command: Sequence[str], env: Mapping[str, str], workdir: Path
    ) -> None:
        self.name = name
        self.command = list(command)
        self.env = dict(env)
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self._log: IO[str] | None = None
        self._terminated = False
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> ManagedProcess:
        """Start (or, after it died, start again) with the same log file."""
        if self._log is not None:
            self._log.close()
        self._log = self.log_path.open("a")  # O_APPEND: child processes share it
        self._terminated = False
        self.process = subprocess.Popen(
            self.command,
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
        assert self.process is not None, f"start {self.name} first"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def process_ids(self) -> set[int]:
        """The process and its descendants, now."""
        if not self.running:
            return set()
        return descendants(self.pid)

    def terminate(self) -> None:
        """SIGTERM to the parent, as a process manager stops a service, and only once:
        uvicorn and livekit-agents take a second one as "exit at once"."""
        if self.running and not self._terminated:
            self._terminated = True
            os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to every process of the group at once (a container killed).

        Safe against pid reuse: the group leader is not reaped until `wait`, so while
        `poll()` says it runs its group id is still ours."""
        if self.running:
            os.killpg(self.pid, signal.SIGKILL)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL for the whole group if it does not end in time; the
        exit status (None if it never started)."""
        if self.process is None:
            return None
        if self.running:
            self.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.process.returncode

    def log_size(self) -> int:
        """Where the log ends now: `log_text(since=...)` reads from there."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_text(self, since: int = 0) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")


class Replica(ManagedProcess):
    """One `lkps serve` (its uvicorn parent and any worker processes)."""

    def __init__(self, name: str, env: Mapping[str, str], workdir: Path) -> None:
        super().__init__(name, [*LKPS, "serve"], env, workdir)
        self.port = int(env["LKPS_PORT"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Replica:
        super().start()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until GET /api/health/ready answers 200 (from some worker)."""
        wait_until_ready(
            lambda: answers_200(f"{self.url}/api/health/ready"),
            running=lambda: self.running,
            what=self.name,
            timeout=timeout,
            log=self.log_text,
        )


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
        LKPS_AUDIT_KEY=audit_key_for(database_url),
        LKPS_AUDIT_SIGNING_KEY=str(shared_signing_key()),
        # Presence from register/heartbeat, which these tests drive by hand; a test of
        # the gateway asks for it (LKPS_AGENT_CONNECTION="gateway").
        LKPS_AGENT_CONNECTION="direct",
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
