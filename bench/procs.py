"""Processes the benchmark starts, and what /proc says about them.

Every child is started in its own session (process group), so stopping it stops what
it started too (uvicorn's workers, granian's workers), and only that: nothing is ever
stopped by name.
"""

# ruff: noqa: S603

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Children:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: list[tuple[str, subprocess.Popen[Any]]] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        capture: bool = False,
    ) -> subprocess.Popen[Any]:
        log: IO[bytes] = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (closed by the child's exit)
        proc = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdout=subprocess.PIPE if capture else log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            text=capture,
        )
        log.close()
        self.running.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[Any], timeout: float = 20.0) -> None:
        """SIGTERM to the child's process group, SIGKILL after `timeout`."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        # Workers that outlived their parent would still be in the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self.running = [(n, p) for n, p in self.running if p is not proc]

    def stop_all(self) -> None:
        for _, proc in reversed(list(self.running)):
            with contextlib.suppress(Exception):
                self.stop(proc, timeout=10)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces; fields follow it.
    return text[text.rindex(")") + 2 :].split()


def parent_map() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(root: int) -> list[int]:
    parents = parent_map()
    found: list[int] = []
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        kids = [child for child, parent in parents.items() if parent == pid]
        found += kids
        frontier += kids
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def worker_pids(root: int) -> list[int]:
    """The processes serving requests under `root`: the leaves of its process tree
    (uvicorn's and granian's workers), leaving out multiprocessing's resource tracker;
    `root` itself when it has no children (one uvicorn worker runs in-process)."""
    parents = parent_map()
    tree = descendants(root)
    candidates = [pid for pid in tree if "resource_tracker" not in cmdline(pid)]
    leaves = [pid for pid in candidates if not any(parents.get(o) == pid for o in candidates)]
    return sorted(leaves) or [root]


def memory_kb(pid: int) -> dict[str, int]:
    """VmHWM (peak resident set) and VmRSS, in kB."""
    values: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in {"VmHWM", "VmRSS"}:
                values[key] = int(value.split()[0])
    except OSError:
        pass
    return values


def cpu_seconds(pid: int) -> float:
    """User + system time of `pid`."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def oncpu_seconds(pid: int) -> float:
    """Time the main thread of `pid` spent on a CPU, in nanoseconds' precision
    (/proc/<pid>/schedstat); /proc/<pid>/stat counts whole 10 ms ticks, too coarse for
    a backend that lives a few milliseconds. Single-threaded processes only."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def start_ticks(pid: int) -> int:
    """When `pid` started, in clock ticks since boot."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else 0


def uptime_ticks() -> int:
    return int(float(Path("/proc/uptime").read_text().split()[0]) * CLOCK_TICKS)


class PostgresCpu:
    """CPU used by the PostgreSQL processes working for one database, while it runs.

    PostgreSQL forks a backend per connection, and a pool that opens and closes
    connections under load makes many short-lived ones, so a before/after sample would
    miss most of them. A thread samples the postmaster's children every `interval` seconds: backends whose title
    names `database`, and the shared auxiliary processes (WAL writer, checkpointer,
    background writer, ...), but not backends of other databases (other users of the
    same server). A backend born during the run counts from zero; what one did in its
    last `interval` before exiting is missed.
    """

    def __init__(self, database: str, interval: float = 0.02) -> None:
        self._database = database
        self._interval = interval
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._excluded: set[int] = set()
        self._postmasters: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-cpu", daemon=True)
        self._began = 0

    def _other_database(self, pid: int) -> bool:
        # "postgres: 15/main: <user> <database> <host>(<port>) <state>" for backends;
        # "postgres: 15/main: walwriter" and the like for auxiliary processes; a child
        # just forked still shows the postmaster's command line (decided later).
        parts = cmdline(pid).split()
        return (
            len(parts) >= 5
            and parts[0] == "postgres:"
            and "(" in parts[4]
            and parts[3] != self._database
        )

    def _pids(self) -> list[int]:
        if not self._postmasters:
            return postgres_pids()
        pids = list(self._postmasters)
        for postmaster in self._postmasters:
            try:
                children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text()
            except OSError:
                continue
            pids += [int(child) for child in children.split()]
        return pids

    def _sample(self) -> None:
        for pid in self._pids():
            if pid in self._excluded:
                continue
            if self._other_database(pid):
                self._excluded.add(pid)
                continue
            if pid not in self._first:
                self._first[pid] = 0.0 if start_ticks(pid) >= self._began else oncpu_seconds(pid)
            self._last[pid] = oncpu_seconds(pid) or self._last.get(pid, 0.0)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> PostgresCpu:
        self._began = uptime_ticks()
        # Backends are the postmasters' children: reading those lists is far cheaper
        # than scanning /proc, so the sampling can be frequent.
        everything = postgres_pids()
        parents = parent_map()
        self._postmasters = [pid for pid in everything if parents.get(pid) not in everything]
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def seconds(self) -> float:
        return sum(
            self._last.get(pid, first) - first
            for pid, first in self._first.items()
            if pid not in self._excluded
        )


def postgres_pids() -> list[int]:
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and comm(int(entry.name)) == "postgres"
    ]


def system_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # leave out guest time, already counted in user
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


class CpuSample:
    """CPU seconds of named groups of processes, and of the machine, at one moment."""

    def __init__(self, groups: Mapping[str, Sequence[int]]) -> None:
        self.at = time.monotonic()
        self.groups = {
            name: {pid: cpu_seconds(pid) for pid in pids} for name, pids in groups.items()
        }
        self.busy, self.total = system_busy_seconds()

    def shares_since(
        self, before: CpuSample, extra_seconds: Mapping[str, float] | None = None
    ) -> dict[str, float]:
        """Each group's CPU over the interval, in cores (1.0 = one core busy), plus
        `extra_seconds` (CPU seconds measured otherwise, e.g. of a reaped child);
        `machine` is every core's busy time, `other` what no group accounts for."""
        wall = self.at - before.at
        shares: dict[str, float] = {}
        for name, now in self.groups.items():
            then = before.groups.get(name, {})
            used = sum(now[pid] - then.get(pid, 0.0) for pid in now)
            shares[name] = round(used / wall, 3)
        for name, seconds in (extra_seconds or {}).items():
            shares[name] = round(seconds / wall, 3)
        shares["machine"] = round((self.busy - before.busy) / wall, 3)
        shares["other"] = round(
            shares["machine"] - sum(v for k, v in shares.items() if k != "machine"), 3
        )
        return shares
