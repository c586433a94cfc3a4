"""The background job loop: a raising run is counted and retried after a doubling
backoff capped at the interval; cancellation alone ends a job, and `aclose` never raises."""

from __future__ import annotations

import asyncio
import logging

import pytest

from lkps.background import BackgroundJobs

pytestmark = pytest.mark.unit


async def test_a_raising_run_is_retried_with_a_doubling_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    jobs = BackgroundJobs(first_backoff=1.0)
    outcomes = [ValueError("boom")] * 5 + [None]

    async def step() -> None:
        if (outcome := outcomes.pop(0)) is not None:
            raise outcome

    job = jobs.every("test-flaky", step, 10.0)
    waits = []
    try:
        for run in range(1, 7):
            job.wake()
            async with asyncio.timeout(30):
                await job.ran(run)
            waits.append(job.next_wait())
        assert job.alive and job.failures == 5 and job.consecutive_failures == 0
        assert waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]  # doubling, capped, then the interval
        assert jobs.stopped() == []
    finally:
        await jobs.aclose()
    assert jobs.stopped() == ["test-flaky"]
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 5 and all("test-flaky" in r.getMessage() for r in failures)


async def test_interval_is_asked_before_each_wait() -> None:
    jobs = BackgroundJobs()
    interval = [3600.0]

    async def step() -> None:
        interval[0] = 60.0

    job = jobs.every("test-interval", step, lambda: interval[0])
    try:
        assert job.next_wait() == 3600.0
        job.wake()
        async with asyncio.timeout(30):
            await job.ran(1)
        assert job.next_wait() == 60.0
    finally:
        await jobs.aclose()


async def test_a_job_that_ignores_cancellation_does_not_hold_up_aclose(
    caplog: pytest.LogCaptureFixture,
) -> None:
    jobs = BackgroundJobs(stop_timeout=0.1)
    started, release = asyncio.Event(), asyncio.Event()

    async def stubborn() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()  # swallows the cancellation until released

    job = jobs.every("test-stubborn", stubborn, 3600)
    job.wake()
    async with asyncio.timeout(30):
        await started.wait()
        await jobs.aclose()
    assert any("did not stop" in r.getMessage() for r in caplog.records)
    release.set()  # the run ends; the job waits for its next one, and a cancel now lands
    job.task.cancel()
    async with asyncio.timeout(30):
        await asyncio.gather(job.task, return_exceptions=True)


def test_names_are_unique() -> None:
    async def run() -> None:
        jobs = BackgroundJobs()

        async def step() -> None:
            return None

        jobs.every("test-once", step, 60)
        try:
            with pytest.raises(ValueError, match="already runs"):
                jobs.every("test-once", step, 60)
        finally:
            await jobs.aclose()

    asyncio.run(run())
