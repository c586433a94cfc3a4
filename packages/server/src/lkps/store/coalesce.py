"""One store read serving every caller that asked for the same key at about the same time,
without serving any of them an answer older than its question."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class CoalescedReads(Generic[K, V]):
    """`read(key)`, shared by concurrent callers, each answered by a read that started
    after it asked.

    A caller that finds no read of its key under way starts one. A caller that finds one
    under way cannot use it (it started before the caller asked, so it may miss a write
    committed since), and waits for the next read of that key, which starts as soon as
    the current one ends and serves every caller that queued meanwhile. So each key has
    at most one read in flight per process, and under load one read answers many callers:
    for the presence read on every session start, this takes the database work from one
    query per request to one per round trip, while a deregistration committed anywhere
    still counts from the next request on.

    The read runs in a task of its own: a caller cancelled while waiting (its client went
    away) does not cancel it for the others. A failed read fails every caller it serves.
    `observe`, if given, is told how many callers each read serves, as it starts.
    """

    def __init__(
        self,
        read: Callable[[K], Awaitable[V]],
        *,
        observe: Callable[[int], object] | None = None,
    ) -> None:
        self._read = read
        self._observe = observe
        self._running: dict[K, asyncio.Task[V]] = {}
        self._next: dict[K, _Queue[V]] = {}

    async def get(self, key: K) -> V:
        if key not in self._running:
            return await asyncio.shield(self._start(key, callers=1))
        queue = self._next.get(key)
        if queue is None:
            queue = self._next[key] = _Queue()
        queue.callers += 1
        return await asyncio.shield(queue.answer)

    def in_flight(self) -> int:
        return len(self._running)

    def _start(self, key: K, *, callers: int) -> asyncio.Task[V]:
        if self._observe is not None:
            self._observe(callers)
        task = asyncio.ensure_future(self._read(key))
        self._running[key] = task
        task.add_done_callback(lambda done: self._ended(key, done))
        return task

    def _ended(self, key: K, done: asyncio.Task[V]) -> None:
        _retrieve(done)
        del self._running[key]
        queue = self._next.pop(key, None)
        if queue is not None:
            read = self._start(key, callers=queue.callers)
            read.add_done_callback(lambda done: _settle(queue.answer, done))


def _future() -> asyncio.Future[V]:
    future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
    # Retrieved even if every caller waiting for it was cancelled.
    future.add_done_callback(_retrieve)
    return future


@dataclass
class _Queue(Generic[V]):
    """The callers waiting for the next read of one key, and where they get its answer."""

    answer: asyncio.Future[V] = field(default_factory=_future)
    callers: int = 0


def _retrieve(future: asyncio.Future[V]) -> None:
    """Mark a failure as seen: the callers that awaited it got it already."""
    if not future.cancelled():
        future.exception()


def _settle(future: asyncio.Future[V], read: asyncio.Future[V]) -> None:
    if read.cancelled():
        future.cancel()
    elif (error := read.exception()) is not None:
        future.set_exception(error)
    else:
        future.set_result(read.result())
