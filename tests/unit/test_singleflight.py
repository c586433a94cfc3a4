"""SingleFlight: concurrent callers share runs. Not joining a run under way (the presence
read's policy), none gets an answer older than its question; joining (the Graph cache's),
a burst of callers costs one run."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from lkps.singleflight import SingleFlight

pytestmark = pytest.mark.unit


class Store:
    """A value per key, and reads of it that wait until the test lets them finish."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.reads: list[tuple[str, str]] = []  # (key, value seen when the read started)
        self.gates: list[asyncio.Event] = []
        self.failure: Exception | None = None
        self.started = asyncio.Condition()

    async def read(self, key: str) -> str:
        seen = self.values.get(key, "absent")
        self.reads.append((key, seen))
        gate = asyncio.Event()
        async with self.started:
            self.gates.append(gate)
            self.started.notify_all()
        await gate.wait()
        if self.failure is not None:
            raise self.failure
        return seen

    async def open_gate(self, index: int) -> None:
        """Let read number `index` (from 0) finish, once it has started."""
        try:
            async with asyncio.timeout(2), self.started:
                await self.started.wait_for(lambda: len(self.gates) > index)
        except TimeoutError:
            raise AssertionError(f"read {index} never started") from None
        self.gates[index].set()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def under_way_then_queued(
    reads: SingleFlight[str, str], queued: int
) -> tuple[asyncio.Task[str], list[asyncio.Task[str]]]:
    """A caller whose read is under way, then `queued` callers that arrived during it."""
    first = asyncio.create_task(reads.get("a"))
    await settle()
    later = [asyncio.create_task(reads.get("a")) for _ in range(queued)]
    await settle()
    return first, later


async def test_callers_arriving_during_a_read_share_the_next_one() -> None:
    store = Store()
    store.values["a"] = "v1"
    served: list[int] = []
    reads = SingleFlight(store.read, join_running=False, observe=served.append)
    first, queued = await under_way_then_queued(reads, 9)
    assert store.reads == [("a", "v1")]  # the queued callers did not start reads of their own
    await store.open_gate(0)
    await store.open_gate(1)
    assert await first == "v1"
    assert await asyncio.gather(*queued) == ["v1"] * 9
    assert len(store.reads) == 2
    assert served == [1, 9]
    assert reads.in_flight() == 0


async def test_no_caller_gets_a_read_that_started_before_it_asked() -> None:
    store = Store()
    store.values["a"] = "before"
    reads = SingleFlight(store.read, join_running=False)
    early = asyncio.create_task(reads.get("a"))
    await settle()
    store.values["a"] = "after"  # committed while the first read is under way
    late = asyncio.create_task(reads.get("a"))
    await settle()
    await store.open_gate(0)
    assert await early == "before"
    await store.open_gate(1)
    assert await late == "after"
    assert store.reads == [("a", "before"), ("a", "after")]


async def test_different_keys_are_read_side_by_side() -> None:
    store = Store()
    reads = SingleFlight(store.read, join_running=False)
    both = asyncio.gather(reads.get("a"), reads.get("b"))
    await settle()
    assert sorted(key for key, _ in store.reads) == ["a", "b"]
    await store.open_gate(0)
    await store.open_gate(1)
    assert list(await both) == ["absent", "absent"]


async def test_a_failed_read_fails_every_caller_it_serves_and_the_next_read_starts_afresh() -> None:
    store = Store()
    reads = SingleFlight(store.read, join_running=False)
    store.failure = RuntimeError("store down")
    first, queued = await under_way_then_queued(reads, 3)
    await store.open_gate(0)
    await store.open_gate(1)
    results = await asyncio.gather(first, *queued, return_exceptions=True)
    assert all(isinstance(result, RuntimeError) for result in results)
    assert reads.in_flight() == 0
    store.failure = None
    store.values["a"] = "back"
    again = asyncio.create_task(reads.get("a"))
    await store.open_gate(2)
    assert await again == "back"


async def test_a_cancelled_caller_does_not_cancel_the_read_for_the_others() -> None:
    store = Store()
    store.values["a"] = "v"
    reads = SingleFlight(store.read, join_running=False)
    leader, (gone, staying) = await under_way_then_queued(reads, 2)
    leader.cancel()
    gone.cancel()
    await store.open_gate(0)
    await store.open_gate(1)
    assert await staying == "v"
    assert leader.cancelled() and gone.cancelled()
    assert len(store.reads) == 2


async def test_a_failure_nobody_waits_for_any_more_is_not_reported_as_unretrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gc.collect()  # an earlier test's garbage in this process would be logged below
    store = Store()
    store.failure = RuntimeError("store down")
    reads = SingleFlight(store.read, join_running=False)
    callers = [asyncio.create_task(reads.get("a")) for _ in range(2)]
    await settle()
    for caller in callers:
        caller.cancel()
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        await store.open_gate(0)
        await store.open_gate(1)
        await settle()
        gc.collect()
        await settle()
    assert reads.in_flight() == 0
    assert "never retrieved" not in caplog.text


async def test_joining_callers_share_the_run_under_way() -> None:
    store = Store()
    store.values["a"] = "v1"
    served: list[int] = []
    runs = SingleFlight(store.read, join_running=True, observe=served.append)
    first = asyncio.create_task(runs.get("a"))
    await settle()
    store.values["a"] = "v2"  # a joining caller may get the older answer: its policy
    joined = [asyncio.create_task(runs.get("a")) for _ in range(9)]
    await settle()
    joined[0].cancel()  # a caller that goes away does not cancel the run for the others
    await store.open_gate(0)
    assert await first == "v1"
    assert await asyncio.gather(*joined[1:]) == ["v1"] * 8
    assert store.reads == [("a", "v1")]
    assert served == [1]
    assert runs.running("a") is None


async def test_a_failed_run_fails_every_joined_caller() -> None:
    store = Store()
    store.failure = RuntimeError("backend down")
    runs = SingleFlight(store.read, join_running=True)
    callers = [asyncio.create_task(runs.get("a")) for _ in range(3)]
    await settle()
    await store.open_gate(0)
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(result, RuntimeError) for result in results)
    assert len(store.reads) == 1


async def test_settled_waits_for_the_queued_run_too() -> None:
    store = Store()
    reads = SingleFlight(store.read, join_running=False)
    first, queued = await under_way_then_queued(reads, 1)
    settled = asyncio.create_task(reads.settled())
    await store.open_gate(0)
    await settle()
    assert not settled.done()  # the queued read started when the first ended
    await store.open_gate(1)
    await settled
    assert reads.in_flight() == 0
    assert await asyncio.gather(first, *queued) == ["absent", "absent"]


async def test_aclose_cancels_the_run_under_way_and_the_queued_callers() -> None:
    store = Store()
    reads = SingleFlight(store.read, join_running=False)
    first, queued = await under_way_then_queued(reads, 2)
    await reads.aclose()
    results = await asyncio.gather(first, *queued, return_exceptions=True)
    assert all(isinstance(result, asyncio.CancelledError) for result in results)
    assert len(store.reads) == 1  # the queued read never started
    assert reads.in_flight() == 0
