"""LKPS's background jobs through the real app: a failing run is logged and retried, a
job that ends is named by readiness, and shutdown closes everything whatever raised."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from lkps.authorization import FileAuthorizationSource
from lkps.services import Services
from tests.api.util import running_lkps
from tests.conftest import FakeClock, Lkps

pytestmark = [pytest.mark.api, pytest.mark.backends("sqlite")]


class CloseFails(FileAuthorizationSource):
    """The file source, but closing it raises (a client library failing at shutdown)."""

    async def aclose(self) -> None:
        raise RuntimeError("the source could not close")


def assert_closed(services: Services, pool: Any) -> None:
    assert not services.audit.running
    assert services.db.engine.pool is not pool  # disposed: the engine made a new pool
    assert pool.checkedin() == 0
    assert not any(job.alive for job in map(services.background.__getitem__, JOBS))


JOBS = ("lkps-jwks-refresh", "lkps-presence-sweeper")


async def test_shutdown_goes_on_when_closing_the_source_raises(
    settings_values: dict[str, Any], clock: FakeClock, entra: Any, authz_file: Path
) -> None:
    source = CloseFails(authz_file)
    async with running_lkps(settings_values, clock, entra, authorization_source=source) as lkps:
        assert (await lkps.register()).status_code == 200
        services = lkps.services
        pool: Any = services.db.engine.pool
        assert pool.checkedin() > 0
    assert_closed(services, pool)


async def test_shutdown_goes_on_when_a_job_raises_as_it_is_cancelled(
    settings_values: dict[str, Any], clock: FakeClock, entra: Any
) -> None:
    started = asyncio.Event()

    async def refuses_to_stop() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("a job that raises instead of stopping") from None

    async with running_lkps(settings_values, clock, entra) as lkps:
        job = lkps.services.background.every("test-stubborn", refuses_to_stop, 0)
        async with asyncio.timeout(30):
            await started.wait()
        assert (await lkps.register()).status_code == 200
        services = lkps.services
        pool: Any = services.db.engine.pool
    assert_closed(services, pool)
    assert job.task.done() and isinstance(job.task.exception(), RuntimeError)


async def test_presence_sweep_survives_a_failing_run(lkps: Lkps, clock: FakeClock) -> None:
    sweeper = lkps.services.background["lkps-presence-sweeper"]
    registration = (await lkps.register()).json()["registration_id"]
    clock.advance(91)
    await lkps.services.audit.stop()  # the sweep cannot record the lapse: its run fails

    sweeper.wake()
    async with asyncio.timeout(30):
        await sweeper.ran(sweeper.runs + 1)
    assert sweeper.failures == 1 and sweeper.alive
    assert 0 < sweeper.next_wait() <= 1.0  # retried after a short backoff, not a full interval

    await lkps.services.audit.start()
    sweeper.wake()
    async with asyncio.timeout(30):
        await sweeper.ran(sweeper.runs + 1)
    assert sweeper.consecutive_failures == 0 and sweeper.alive
    expired = [r for r in await lkps.audit_records() if r.event == "agent.expire"]
    assert [r.registration_id for r in expired] == [registration]


async def test_readiness_names_a_job_that_ended(lkps: Lkps) -> None:
    job = lkps.services.background["lkps-presence-sweeper"]
    job.task.cancel()
    async with asyncio.timeout(30):
        await asyncio.gather(job.task, return_exceptions=True)
    response = await lkps.http.get("/api/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["background_jobs"] == "failing"
    assert "lkps-presence-sweeper" in body["message"]
