"""What the Prometheus metrics say after real requests (deltas: the registry is the
process's, shared by every test)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY

from lkps.gateway import WorkerSession
from lkps.gateway.live import LiveConnections
from lkps_testkit import EntraDouble
from tests.api.util import running_lkps
from tests.backends import StoreSql
from tests.conftest import AGENT, AGENT_2, CLIENT_B, FakeClock, Lkps

pytestmark = pytest.mark.api


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Delta:
    def __init__(self, name: str, **labels: str) -> None:
        self.name, self.labels = name, labels
        self.start = sample(name, **labels)

    @property
    def value(self) -> float:
        return sample(self.name, **self.labels) - self.start


async def test_requests_are_counted_by_route_template(lkps: Lkps) -> None:
    override = Delta(
        "lkps_http_requests_total",
        method="GET",
        route="/api/agents/{agent_id}/authorization",
        status="403",
    )
    unmatched = Delta("lkps_http_requests_total", method="GET", route="unmatched", status="404")
    latency = Delta("lkps_http_request_duration_seconds_count", method="GET", route="/api/health")
    for agent in ("aaaaaaaa-aaaa-4aaa-8aaa-00000000000" + str(i) for i in range(3)):
        await lkps.http.get(
            f"/api/agents/{agent}/authorization",
            headers={"Authorization": f"Bearer {lkps.user_token()}"},
        )
    for i in range(5):
        await lkps.http.get(f"/no/such/path/{i}")
    await lkps.http.get("/api/health")
    assert override.value == 3  # one series for every agent id in the path
    assert unmatched.value == 5  # and one for every unknown path
    assert latency.value == 1


async def test_session_starts_by_outcome_and_agent(lkps: Lkps) -> None:
    granted = Delta("lkps_session_starts_total", outcome="granted", status="200", agent=AGENT)
    refused = Delta("lkps_session_starts_total", outcome="denied", status="403", agent=AGENT)
    absent = Delta("lkps_session_starts_total", outcome="denied", status="404", agent="-")
    await lkps.register(AGENT)
    await lkps.start_session(AGENT)
    await lkps.start_session(AGENT, token=lkps.user_token(client=CLIENT_B))
    await lkps.start_session("dddddddd-dddd-4ddd-8ddd-dddddddddddd")  # never registered
    assert (granted.value, refused.value, absent.value) == (1, 1, 1)


async def test_presence_reads_count_the_session_starts_they_answer(lkps: Lkps) -> None:
    callers = Delta("lkps_presence_read_callers_sum")
    reads = Delta("lkps_presence_read_callers_count")
    await lkps.register(AGENT)
    tokens = [lkps.user_token(f"user{i}") for i in range(20)]
    started = await asyncio.gather(*(lkps.start_session(AGENT, token=t) for t in tokens))
    assert [response.status_code for response in started] == [200] * 20
    assert callers.value == 20
    assert 1 <= reads.value <= 20


async def test_audit_jwks_token_cache_and_rate_limit_metrics(
    settings_values: dict[str, Any], clock: FakeClock, entra: EntraDouble
) -> None:
    writes = Delta("lkps_audit_write_seconds_count")
    records = Delta("lkps_audit_records_total", event="session.start", outcome="granted")
    fetches = Delta("lkps_jwks_fetches_total", outcome="ok")
    hits = Delta("lkps_verified_token_cache_total", result="hit")
    limited = Delta("lkps_rate_limited_total", limit="session_per_user")
    settings = {**settings_values, "rate_limit_session_per_user": 2}
    async with running_lkps(settings, clock, entra) as lkps:
        await lkps.register(AGENT)
        alice = lkps.user_token()
        for _ in range(3):
            await lkps.start_session(AGENT, token=alice)
        await lkps.services.sweeper.update_gauges()
        assert sample("lkps_agents_present") == 1
        assert sample("lkps_agent_registrations_live") == 1
    assert records.value == 2
    assert writes.value >= 1
    assert fetches.value == 1  # the startup fetch
    assert hits.value >= 2  # alice's token verified once, then served from the cache
    assert limited.value == 1


async def test_chain_verifications_by_result(lkps: Lkps, store_sql: StoreSql) -> None:
    """The alert on a broken chain (deploy/prometheus) counts on this: each verification
    over HTTP is counted by its result, and an edited record counts as broken."""
    ok = Delta("lkps_audit_chain_verifications_total", result="ok")
    broken = Delta("lkps_audit_chain_verifications_total", result="broken")
    headers = {"Authorization": f"Bearer {lkps.user_token('ops', roles=['LKPS.Auditor'])}"}
    await lkps.register(AGENT)
    await lkps.start_session(AGENT)
    assert (await lkps.http.get("/api/audit/verify", headers=headers)).json()["ok"] is True
    assert (ok.value, broken.value) == (1, 0)
    await store_sql.allow_audit_changes()
    await store_sql.execute("UPDATE audit_records SET outcome = 'denied' WHERE seq = 2")
    assert (await lkps.http.get("/api/audit/verify", headers=headers)).json()["ok"] is False
    assert (ok.value, broken.value) == (1, 1)
    # A caller without the auditor role verifies nothing, so nothing is counted.
    refused = await lkps.http.get(
        "/api/audit/verify", headers={"Authorization": f"Bearer {lkps.user_token('alice')}"}
    )
    assert refused.status_code == 403
    assert (ok.value, broken.value) == (1, 1)


async def test_agents_present_in_gateway_mode_counts_live_worker_connections(
    settings_values: dict[str, Any], clock: FakeClock, entra: EntraDouble
) -> None:
    """Gateway mode: an agent is present while one of its workers holds a connection
    LiveKit registered, on a replica whose lease is alive (what session starts read),
    whatever its registrations say."""
    settings = {**settings_values, "agent_connection": "gateway"}

    async def present() -> float:
        await lkps.services.sweeper.update_gauges()
        return sample("lkps_agents_present")

    async with running_lkps(settings, clock, entra) as lkps:
        live = lkps.services.connections
        assert live is not None
        first, second = [
            (await lkps.register(agent)).json()["registration_id"] for agent in (AGENT, AGENT_2)
        ]
        assert await present() == 0  # registered, no worker connected
        assert sample("lkps_agent_registrations_live") == 2
        worker = WorkerSession(AGENT, first, None)
        await live.connected(worker)
        assert await present() == 0  # LiveKit has not answered its register yet
        await live.registered(worker, "AW_here")
        assert await present() == 1
        assert (await lkps.start_session(AGENT)).status_code == 200

        # AGENT_2's worker on a replica that then dies: it counts until its lease lapses.
        dead = LiveConnections(
            lkps.services.db, clock, replica_id="dead", target_load=0.7, lease_seconds=6
        )
        await dead.start()
        elsewhere = WorkerSession(AGENT_2, second, None)
        await dead.connected(elsewhere)
        await dead.registered(elsewhere, "AW_there")
        assert await present() == 2
        clock.advance(7)
        await live.renew()  # this replica's lease, renewed as its background job does
        assert await present() == 1
        assert (await lkps.start_session(AGENT_2)).status_code == 404

        await live.closed(worker)
        assert await present() == 0
