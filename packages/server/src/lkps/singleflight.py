"""At most one run of an async function per key at a time, its answer shared by every
caller that asked for that key meanwhile ("single flight").

One implementation serves two policies, because callers differ in how old an answer
they may accept:

- `join_running=True`: a caller that finds a run of its key under way shares it. Right
  for a cache that may serve stale values anyway (the Graph authorization cache): a
  burst of callers costs one request to the backend.
- `join_running=False`: a run under way started before the caller asked, so it may
  miss a write committed since; the caller waits for the next run of that key, which
  starts as soon as the current one ends and serves every caller that queued meanwhile.
  Right for store reads whose callers must see every write committed before they asked
  (the presence read on every session start): under load one read still answers many
  callers, yet none gets an answer older than its question.

Under both, a run is a task of its own: a caller cancelled while waiting (its client
went away) does not cancel it for the others; and a failed run fails every caller it
serves. This module imports nothing of LKPS, so any package may use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """`run(key)` shared by concurrent callers of one key (see the module docstring).

    `observe`, if given, is told how many callers each run serves as it starts: the
    callers queued for it (always 1 with `join_running=True`, where callers that join
    later are not counted). `name`, if given, names each run's task `{name}-{key}`.
    """

    def __init__(
        self,
        run: Callable[[K], Awaitable[V]],
        *,
        join_running: bool,
        observe: Callable[[int], object] | None = None,
        name: str | None = None,
    ) -> None:
        self._run = run
        self._join_running = join_running
        self._observe = observe
        self._name = name
        self._running: dict[K, asyncio.Task[V]] = {}
        self._next: dict[K, _Queue[V]] = {}

    async def get(self, key: K) -> V:
        """The answer of the run that serves a caller asking now."""
        return await asyncio.shield(self.flight(key))

    def flight(self, key: K) -> asyncio.Future[V]:
        """The run that serves a caller asking now: the one under way (when joining), the
        next one (when not), or a new one. Await it shielded: it is shared."""
        running = self._running.get(key)
        if running is None:
            return self._start(key, callers=1)
        if self._join_running:
            return running
        queue = self._next.get(key)
        if queue is None:
            queue = self._next[key] = _Queue()
        queue.callers += 1
        return queue.answer

    def running(self, key: K) -> asyncio.Future[V] | None:
        """The run of `key` under way, if any (so a caller can decide before starting one)."""
        return self._running.get(key)

    def in_flight(self) -> int:
        return len(self._running)

    async def settled(self) -> None:
        """Wait until no run is under way (runs queued meanwhile included)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel every run under way and every queued one. Ask for no flight afterwards."""
        for queue in self._next.values():
            queue.answer.cancel()
        self._next.clear()
        runs = list(self._running.values())
        for run in runs:
            run.cancel()
        await asyncio.gather(*runs, return_exceptions=True)

    def _start(self, key: K, *, callers: int) -> asyncio.Task[V]:
        if self._observe is not None:
            self._observe(callers)
        task = asyncio.ensure_future(self._run(key))
        if self._name is not None:
            task.set_name(f"{self._name}-{key}")
        self._running[key] = task
        task.add_done_callback(lambda done: self._ended(key, done))
        return task

    def _ended(self, key: K, done: asyncio.Task[V]) -> None:
        _retrieve(done)
        del self._running[key]
        queue = self._next.pop(key, None)
        if queue is not None:
            run = self._start(key, callers=queue.callers)
            run.add_done_callback(lambda done: _settle(queue.answer, done))


def _future() -> asyncio.Future[V]:
    future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
    # Retrieved even if every caller waiting for it was cancelled.
    future.add_done_callback(_retrieve)
    return future


@dataclass
class _Queue(Generic[V]):
    """The callers waiting for the next run of one key, and where they get its answer."""

    answer: asyncio.Future[V] = field(default_factory=_future)
    callers: int = 0


def _retrieve(future: asyncio.Future[V]) -> None:
    """Mark a failure as seen: the callers that awaited it got it already."""
    if not future.cancelled():
        future.exception()


def _settle(future: asyncio.Future[V], run: asyncio.Future[V]) -> None:
    if run.cancelled():
        future.cancel()
    elif (error := run.exception()) is not None:
        future.set_exception(error)
    else:
        future.set_result(run.result())
