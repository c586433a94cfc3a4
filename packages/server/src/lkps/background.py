"""LKPS's long-running background jobs, kept alive whatever one of their runs raises.

A background task that dies does so silently: nothing awaits it until shutdown, so the
keys stop being refreshed (or lapsed registrations stop being recorded) with no sign but
a "Task exception was never retrieved" line, and at shutdown its exception surfaces in
the middle of the teardown. So every periodic job runs here, through one loop: a run
that raises is logged, counted (`lkps_background_failures_total`) and retried after a
backoff that doubles up to the job's interval; only cancellation ends it. Should a job's
task end all the same, `stopped()` names it, and readiness reports it.

Each job's wait can be cut short with `Job.wake()`, and `Job.ran(n)` waits for its n-th
run: tests drive the jobs with these, never with wall-clock sleeps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from lkps.metrics import BACKGROUND_FAILURES

log = logging.getLogger(__name__)

Interval = Callable[[], float]


class Job:
    """One named periodic job: its task, its counters and a way to wake it early."""

    def __init__(
        self,
        name: str,
        step: Callable[[], Awaitable[object]],
        interval: Interval,
        *,
        first_backoff: float,
    ) -> None:
        self.name = name
        self._step = step
        self._interval = interval
        self._first_backoff = first_backoff
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()
        self.runs = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.task: asyncio.Task[None] = asyncio.create_task(self._loop(), name=name)

    @property
    def alive(self) -> bool:
        return not self.task.done()

    def wake(self) -> None:
        """Start the next run now instead of at the end of the current wait."""
        self._wake.set()

    async def ran(self, count: int) -> None:
        """Wait until the job has completed `count` runs (succeeded or failed)."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.runs >= count)

    def next_wait(self) -> float:
        """The job's interval, or after failures a backoff doubling from `first_backoff`
        (never longer than the interval)."""
        interval = max(0.0, self._interval())
        if not self.consecutive_failures:
            return interval
        backoff: float = self._first_backoff * 2.0 ** min(self.consecutive_failures - 1, 30)
        return min(interval, backoff)

    async def _loop(self) -> None:
        while True:
            await self._sleep(self.next_wait())
            await self._run_once()

    async def _sleep(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass
        self._wake.clear()

    async def _run_once(self) -> None:
        try:
            await self._step()
        except Exception as exc:
            if self.task.cancelling():  # cancelled, and the step raised something else
                raise
            self.failures += 1
            self.consecutive_failures += 1
            BACKGROUND_FAILURES.labels(self.name).inc()
            log.error(
                "background job %s failed (%d in a row); retrying in %.0fs",
                self.name,
                self.consecutive_failures,
                self.next_wait(),
                exc_info=True,
                extra={"task": self.name, "error": type(exc).__name__},
            )
        else:
            self.consecutive_failures = 0
        async with self._progress:
            self.runs += 1
            self._progress.notify_all()


class BackgroundJobs:
    """The process's background jobs, started by `every` and cancelled by `aclose`."""

    def __init__(self, *, first_backoff: float = 1.0, stop_timeout: float = 10.0) -> None:
        self._first_backoff = first_backoff
        self._stop_timeout = stop_timeout
        self._jobs: dict[str, Job] = {}

    def every(
        self, name: str, step: Callable[[], Awaitable[object]], interval: float | Interval
    ) -> Job:
        """Run `step` after every `interval` seconds (a callable is asked before each
        wait), forever; the first run comes after the first wait."""
        if name in self._jobs:
            raise ValueError(f"a background job named {name!r} already runs")
        wait = interval if callable(interval) else (lambda: float(interval))
        job = Job(name, step, wait, first_backoff=self._first_backoff)
        self._jobs[name] = job
        return job

    def __getitem__(self, name: str) -> Job:
        return self._jobs[name]

    def stopped(self) -> list[str]:
        """Names of jobs whose task has ended (which only cancellation should do)."""
        return [name for name, job in self._jobs.items() if not job.alive]

    async def aclose(self) -> None:
        """Cancel every job and wait (up to `stop_timeout`) for it to end; a job that ended
        with an exception, or did not end, is logged, never raised, so the rest of the
        shutdown goes on."""
        jobs = list(self._jobs.values())
        for job in jobs:
            job.task.cancel()
        if not jobs:
            return
        await asyncio.wait([job.task for job in jobs], timeout=self._stop_timeout)
        for job in jobs:
            if not job.task.done():
                log.error("background job %s did not stop", job.name, extra={"task": job.name})
            elif not job.task.cancelled() and (error := job.task.exception()) is not None:
                log.error(
                    "background job %s ended with %s",
                    job.name,
                    type(error).__name__,
                    exc_info=error,
                    extra={"task": job.name},
                )
