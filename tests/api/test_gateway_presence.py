"""Presence and capacity from the live gateway connection (issue 11): LKPS on a real
socket in gateway mode in front of the LiveKit double, workers speaking `/agent` by hand.

An agent is present while one of its workers holds a registered connection on a replica
whose lease is alive; it is at capacity (503) when every such worker is full or at/above
the target load. Every replica on the same store sees the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
import pytest
from fastapi import FastAPI
from livekit.protocol import agent

from lkps.agents import AgentRegistry
from lkps.app import create_app
from lkps.config import Settings
from lkps.gateway import WorkerSession, WorkerStatus
from lkps.gateway.live import LiveConnections
from lkps.services import Services
from lkps.store import Database
from lkps_testkit import EntraDouble, ServerThread
from lkps_testkit.livekit import LiveKitDouble
from tests.conftest import (
    AGENT,
    AGENT_2,
    API_AUDIENCE,
    CLIENT_A,
    LIVEKIT_KEY,
    LIVEKIT_SECRET,
    FakeClock,
)
from tests.livekit_double.fake_worker import FakeWorker

pytestmark = pytest.mark.api

AT_CAPACITY = f"Agent with app ID '{AGENT}' is at capacity"
NOT_CONNECTED = f"Agent with app ID '{AGENT}' is not connected"
# Waits for something the server does after the test's own step returned (a close seen
# by the server, a status relayed): a bound, never a speed the test depends on.
EVENTUALLY = 10.0


@dataclass
class Instance:
    """One LKPS replica on a socket."""

    url: str
    app: FastAPI
    entra: EntraDouble
    livekit: LiveKitDouble

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    def register(self, agent_id: str = AGENT) -> dict[str, Any]:
        token = self.entra.app_token(audience=API_AUDIENCE, client_app_id=agent_id)
        response = httpx.post(
            f"{self.url}/api/agent/register",
            json={"enforce_client_authz": False},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def deregister(self, registration_id: str, agent_id: str = AGENT) -> None:
        token = self.entra.app_token(audience=API_AUDIENCE, client_app_id=agent_id)
        response = httpx.post(
            f"{self.url}/api/agent/deregister",
            json={"registration_id": registration_id},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 204, response.text

    def start(self, agent_id: str = AGENT) -> httpx.Response:
        token = self.entra.user_token(audience=API_AUDIENCE, client_app_id=CLIENT_A)
        return httpx.post(
            f"{self.url}/api/session/start",
            json={"agent_entra_app_id": agent_id},
            headers={"Authorization": f"Bearer {token}"},
        )

    def agents(self) -> dict[str, dict[str, Any]]:
        token = self.entra.app_token(
            audience=API_AUDIENCE, client_app_id=CLIENT_A, roles=["LKPS.Admin"]
        )
        response = httpx.get(f"{self.url}/api/agents", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        return {agent["agent_id"]: agent for agent in response.json()["agents"]}

    def audit(self, event: str) -> list[dict[str, Any]]:
        token = self.entra.app_token(
            audience=API_AUDIENCE, client_app_id=CLIENT_A, roles=["LKPS.Auditor"]
        )
        response = httpx.get(
            f"{self.url}/api/audit",
            params={"event": event},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text
        records: list[dict[str, Any]] = response.json()["records"]
        return records

    def worker(self, registration: dict[str, Any], agent_name: str = AGENT) -> FakeWorker:
        return FakeWorker(self.livekit, registration["token"], agent_name=agent_name, url=self.url)


@pytest.fixture
def livekit() -> Iterator[LiveKitDouble]:
    with LiveKitDouble(api_key=LIVEKIT_KEY, api_secret=LIVEKIT_SECRET) as double:
        yield double


@pytest.fixture
def gateway_settings(settings_values: dict[str, Any], livekit: LiveKitDouble) -> Settings:
    return Settings(
        **(settings_values | {"livekit_url": livekit.url, "agent_connection": "gateway"})
    )


@contextmanager
def serving(
    settings: Settings, clock: FakeClock, entra: EntraDouble, livekit: LiveKitDouble
) -> Iterator[Instance]:
    app = create_app(settings, clock=clock)
    with ServerThread(app) as server:
        yield Instance(server.url, app, entra, livekit)


@pytest.fixture
def lkps(
    gateway_settings: Settings, clock: FakeClock, entra: EntraDouble, livekit: LiveKitDouble
) -> Iterator[Instance]:
    with serving(gateway_settings, clock, entra, livekit) as instance:
        yield instance


async def eventually(check: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    """Poll until `check` holds: for what the server does after the test's step returned."""
    deadline = time.monotonic() + EVENTUALLY
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {EVENTUALLY:.0f} s")
        await asyncio.sleep(0.05)


def status_of(instance: Instance, agent_id: str = AGENT) -> Callable[[], Awaitable[int]]:
    async def status() -> int:
        response = await asyncio.to_thread(instance.start, agent_id)
        return response.status_code

    return status


async def answers(instance: Instance, code: int, agent_id: str = AGENT) -> bool:
    return await status_of(instance, agent_id)() == code


async def test_present_while_a_registered_connection_is_open(lkps: Instance) -> None:
    registration = lkps.register()
    # Registered, heartbeat fresh, but no worker connected: not present in gateway mode.
    refused = lkps.start()
    assert refused.status_code == 404 and refused.json()["message"] == NOT_CONNECTED
    async with lkps.worker(registration):
        # The worker heard LiveKit's register answer: LKPS already counts it.
        granted = lkps.start()
        assert granted.status_code == 200, granted.text
        assert lkps.start(AGENT_2).status_code == 404  # another agent: still absent
    await eventually(lambda: answers(lkps, 404), "the closed worker no longer counting")


async def test_a_worker_that_never_registers_with_livekit_does_not_count(
    lkps: Instance,
) -> None:
    worker = lkps.worker(lkps.register())
    try:
        await worker.connect(register=False)
        await eventually(
            lambda: (
                lkps.services.connections is not None
                and lkps.services.connections.connections() == []
            ),
            "nothing connected yet",
        )
        assert lkps.start().status_code == 404
    finally:
        await worker.close()


async def test_every_worker_full_is_503_at_capacity_and_audited(lkps: Instance) -> None:
    registration = lkps.register()
    async with lkps.worker(registration) as first, lkps.worker(lkps.register()) as second:
        await first.report(load=0.95)
        await second.report(load=0.7)  # at the target counts as full, as in LiveKit
        await eventually(lambda: answers(lkps, 503), "both workers at capacity")
        response = lkps.start()
        assert response.status_code == 503
        assert response.headers["Retry-After"].isdigit()
        assert response.json()["message"] == AT_CAPACITY
        assert response.json()["error"] == "service_unavailable"
        denial = lkps.audit("session.start")[-1]
        assert denial["outcome"] == "denied" and denial["status"] == 503
        assert denial["reason"] == AT_CAPACITY and denial["agent_id"] == AGENT

        await second.report(load=0.1, status=agent.WS_FULL)  # full, whatever its load
        await eventually(lambda: answers(lkps, 503), "WS_FULL counting as full")
        await second.report(load=0.69)  # under the target again: sessions reach it
        await eventually(lambda: answers(lkps, 200), "the worker taking jobs again")
        assert lkps.start().status_code == 200


async def test_admin_sees_each_connected_worker(lkps: Instance) -> None:
    registration = lkps.register()
    async with lkps.worker(registration) as worker:
        await worker.send(
            agent.WorkerMessage(
                update_worker=agent.UpdateWorkerStatus(
                    load=0.8, status=agent.WS_AVAILABLE, job_count=3
                )
            )
        )
        await eventually(
            lambda: lkps.agents()[AGENT]["workers"][0]["status"] == "full",
            "the status reaching the listing",
        )
        listed = lkps.agents()[AGENT]
        [shown] = listed["workers"]
        assert listed["present"] is True
        assert shown["replica_id"] == lkps.services.connections.replica_id  # type: ignore[union-attr]
        assert shown["worker_id"] == worker.worker_id
        assert shown["registration_id"] == registration["registration_id"]
        assert shown["load"] == pytest.approx(0.8) and shown["job_count"] == 3
        assert shown["registered"] is True and shown["connected_at"]
    await eventually(lambda: lkps.agents()[AGENT]["workers"] == [], "the worker leaving")
    assert lkps.agents()[AGENT]["present"] is False


async def test_a_deregistered_credential_is_refused_at_connect(lkps: Instance) -> None:
    registration = lkps.register()
    lkps.deregister(registration["registration_id"])
    worker = lkps.worker(registration)
    try:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await worker.connect()
    finally:
        await worker.close()
    assert refused.value.status == 401
    [refusal] = lkps.audit("agent.worker_refused")
    assert refusal["registration_id"] == registration["registration_id"]
    assert "registration" in refusal["reason"] and "ended" in refusal["reason"]
    assert lkps.livekit.workers(AGENT, connected_only=False) == []


async def test_deregistration_ends_presence_at_once(lkps: Instance) -> None:
    registration = lkps.register()
    async with lkps.worker(registration) as worker:
        assert lkps.start().status_code == 200
        lkps.deregister(registration["registration_id"])
        assert lkps.start().status_code == 404  # on the very next read
        await worker.report(load=0.1)  # a later status brings nothing back
        await asyncio.sleep(0)
        assert lkps.start().status_code == 404


async def test_a_replica_whose_lease_lapsed_stops_counting(
    lkps: Instance, gateway_settings: Settings, clock: FakeClock
) -> None:
    """A replica SIGKILLed: it never deletes its rows and never renews its lease. Its
    workers count until the lease lapses (LKPS_AGENT_GATEWAY_LEASE_SECONDS), no longer."""
    lkps.register()
    db = Database.from_url(gateway_settings.database_url, pool_size=2)
    try:
        dead = LiveConnections(
            db,
            clock,
            replica_id="killed-replica",
            target_load=0.7,
            lease_seconds=gateway_settings.agent_gateway_lease_seconds,
        )
        await dead.start()
        session = WorkerSession(AGENT, "0f0f0f0f-0000-4000-8000-000000000001", None)
        await dead.connected(session)
        await dead.registered(session, "AW_killed")
        assert lkps.start().status_code == 200
        await dead.status(session, WorkerStatus(available=True, load=0.99, job_count=1))
        assert lkps.start().status_code == 503
        await dead.status(session, WorkerStatus(available=True, load=0.2, job_count=1))

        clock.advance(gateway_settings.agent_gateway_lease_seconds - 0.5)
        assert lkps.start().status_code == 200  # still within its lease
        clock.advance(1.0)
        assert lkps.start().status_code == 404  # lapsed: no session for a dead worker
        assert lkps.agents()[AGENT]["workers"] == []
        # The live replica renews its own lease against the same clock (every third of
        # the lease): a worker on it counts again by its next renewal.
        async with lkps.worker(lkps.register()):
            await eventually(lambda: answers(lkps, 200), "the live replica's lease renewed")
    finally:
        await db.dispose()


@pytest.mark.backends("postgresql")
async def test_two_replicas_on_one_store_see_each_others_workers(
    gateway_settings: Settings, clock: FakeClock, entra: EntraDouble, livekit: LiveKitDouble
) -> None:
    with contextlib.ExitStack() as a_running, serving(gateway_settings, clock, entra, livekit) as b:
        a = a_running.enter_context(serving(gateway_settings, clock, entra, livekit))
        assert b.start().status_code == 404
        async with a.worker(a.register()) as on_a:
            assert b.start().status_code == 200  # connected to A, seen by B at once
            await on_a.report(load=1.0)
            await eventually(lambda: answers(b, 503), "B seeing A's worker full")
            assert b.start().json()["message"] == AT_CAPACITY
            async with b.worker(b.register()):
                assert a.start().status_code == 200  # B's worker takes the job
            await eventually(lambda: answers(a, 503), "B's worker leaving")
            [shown] = b.agents()[AGENT]["workers"]
            assert shown["replica_id"] == a.services.connections.replica_id  # type: ignore[union-attr]
        await eventually(lambda: answers(b, 404), "A's worker leaving, seen by B")
        worker = a.worker(a.register())
        try:
            await worker.connect()
            assert b.start().status_code == 200
            # A shuts down gracefully while its worker is still connected: its rows go
            # with it, not when its lease lapses.
            await asyncio.to_thread(a_running.close)
            assert b.start().status_code == 404
            assert b.agents()[AGENT]["workers"] == []
        finally:
            await worker.close()


ENDED = "the registration this credential was issued for has ended; register again"


@pytest.mark.backends("postgresql")
async def test_an_ended_registrations_socket_is_closed_wherever_it_is(
    gateway_settings: Settings, clock: FakeClock, entra: EntraDouble, livekit: LiveKitDouble
) -> None:
    """Deregistered on the replica holding the worker's socket: closed at once. Ended
    on another replica (deregistered there, or expired): closed by the holder's next
    lease renewal. Each close is 1008 with the reason, audited as a refusal, and ends
    the relayed LiveKit connection too."""
    with (
        serving(gateway_settings, clock, entra, livekit) as a,
        serving(gateway_settings, clock, entra, livekit) as b,
    ):
        here, there, lapsed = a.register(), a.register(), a.register()
        async with a.worker(here) as w1, a.worker(there) as w2, a.worker(lapsed) as w3:
            assert len(livekit.workers(AGENT)) == 3
            a.deregister(here["registration_id"])
            closed = await w1.wait_closed()
            assert (closed.data, closed.extra) == (1008, ENDED)
            assert w2.ws is not None and not w2.ws.closed  # its registration is open

            b.deregister(there["registration_id"])
            closed = await w2.wait_closed()
            assert (closed.data, closed.extra) == (1008, ENDED)

            # Expired: claimed by a sweep on some replica (here, the store's own view).
            clock.advance(gateway_settings.presence_ttl + 1)
            db = Database.from_url(gateway_settings.database_url, pool_size=1)
            try:
                registry = AgentRegistry(
                    db, clock, presence_ttl=gateway_settings.presence_ttl, default_enforce=True
                )
                await registry.claim_expired()  # unless a replica's own sweep came first
            finally:
                await db.dispose()
            closed = await w3.wait_closed()
            assert (closed.data, closed.extra) == (1008, ENDED)

        refusals = a.audit("agent.worker_refused")
        assert {(r["registration_id"], r["status"], r["reason"]) for r in refusals} == {
            (registration["registration_id"], 1008, ENDED) for registration in (here, there, lapsed)
        }
        await eventually(lambda: livekit.workers(AGENT) == [], "LiveKit's side closed")
        assert a.start().status_code == 404
