"""The double's memory: every record, behind one lock, with waiting built in.

The server mutates state on its event loop; tests read it from their own thread or
loop. Every mutation happens inside `mutate()`, which holds the lock and wakes every
waiter when it ends, so `wait_until` re-checks its predicate exactly when something
changed instead of polling a clock.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lkps_testkit.livekit.records import (
    DispatchRecord,
    DroppedDispatch,
    JobRecord,
    ParticipantRecord,
    RoomRecord,
    WorkerMessage,
    WorkerRecord,
    to_json,
)

T = TypeVar("T")


@dataclass
class Tables:
    """The records themselves; only touched under the state's lock."""

    rooms: dict[str, RoomRecord] = field(default_factory=dict)  # by sid
    participants: dict[str, ParticipantRecord] = field(default_factory=dict)  # by sid
    dispatches: dict[str, DispatchRecord] = field(default_factory=dict)  # by id
    workers: dict[str, WorkerRecord] = field(default_factory=dict)  # by id
    jobs: dict[str, JobRecord] = field(default_factory=dict)  # by id
    dropped: list[DroppedDispatch] = field(default_factory=list)
    messages: list[WorkerMessage] = field(default_factory=list)


class DoubleState:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._tables = Tables()

    @contextmanager
    def mutate(self) -> Iterator[Tables]:
        with self._changed:
            yield self._tables
            self._changed.notify_all()

    def read(self, query: Callable[[Tables], T]) -> T:
        with self._changed:
            return query(self._tables)

    # Queries. Lists are ordered by time (creation, connection, assignment).

    def rooms(self, *, active_only: bool = True) -> list[RoomRecord]:
        rooms = self.read(lambda t: list(t.rooms.values()))
        return [r for r in rooms if r.active or not active_only]

    def room(self, name: str) -> RoomRecord | None:
        """The open room of that name, if any."""
        return next((r for r in self.rooms() if r.name == name), None)

    def participants(
        self, room: str | None = None, *, active_only: bool = True
    ) -> list[ParticipantRecord]:
        found = self.read(lambda t: list(t.participants.values()))
        return [
            p for p in found if (room is None or p.room == room) and (p.active or not active_only)
        ]

    def dispatches(self, room: str | None = None) -> list[DispatchRecord]:
        found = self.read(lambda t: list(t.dispatches.values()))
        return [d for d in found if room is None or d.room == room]

    def workers(
        self, agent_name: str | None = None, *, connected_only: bool = True
    ) -> list[WorkerRecord]:
        found = self.read(lambda t: list(t.workers.values()))
        return [
            w
            for w in found
            if (agent_name is None or w.agent_name == agent_name)
            and (w.connected or not connected_only)
        ]

    def jobs(self, agent_name: str | None = None, room: str | None = None) -> list[JobRecord]:
        found = self.read(lambda t: list(t.jobs.values()))
        return [
            j
            for j in found
            if (agent_name is None or j.agent_name == agent_name)
            and (room is None or j.room == room)
        ]

    def dropped(self) -> list[DroppedDispatch]:
        return self.read(lambda t: list(t.dropped))

    def messages(self, worker_id: str | None = None) -> list[WorkerMessage]:
        found = self.read(lambda t: list(t.messages))
        return [m for m in found if worker_id is None or m.worker_id == worker_id]

    def snapshot(self) -> dict[str, Any]:
        """Everything, as JSON-ready data (the `/_double/state` endpoint)."""

        def dump(tables: Tables) -> dict[str, Any]:
            return {
                "rooms": [to_json(r) for r in tables.rooms.values()],
                "participants": [to_json(p) for p in tables.participants.values()],
                "dispatches": [to_json(d) for d in tables.dispatches.values()],
                "workers": [to_json(w) for w in tables.workers.values()],
                "jobs": [to_json(j) for j in tables.jobs.values()],
                "dropped_dispatches": [to_json(d) for d in tables.dropped],
                "worker_messages": [to_json(m) for m in tables.messages],
            }

        return self.read(dump)

    # Waiting.

    def wait_until(self, probe: Callable[[], T | None], *, timeout: float, what: str = "") -> T:
        """Block until `probe()` is truthy and return it; TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        # The condition's lock is re-entrant, so the probe may read state while it is held;
        # holding it means no change can slip in between the probe and the wait.
        with self._changed:
            while not (result := probe()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what or probe}")
                self._changed.wait(remaining)
            return result

    async def wait_until_async(
        self,
        probe: Callable[[], T | None],
        *,
        timeout: float,  # noqa: ASYNC109 (a test's wait gives up by itself, saying on what)
        what: str = "",
        interval: float = 0.02,
    ) -> T:
        """`wait_until` for a coroutine: polls, so that the caller's loop keeps running
        (an in-process worker needs it to answer the double)."""
        deadline = time.monotonic() + timeout
        while True:
            if result := probe():
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for {what or probe}")
            await asyncio.sleep(interval)
