"""Every decision is in the hash-chained trail, written before the response leaves."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from lkps.audit.chain import GENESIS_HASH
from tests.backends import StoreRefused, StoreSql
from tests.conftest import AGENT, CLIENT_B, Lkps

pytestmark = pytest.mark.api


async def test_granted_session_record_says_who_what_and_where(lkps: Lkps) -> None:
    await lkps.register()
    response = await lkps.http.post(
        "/api/session/start",
        json={"agent_entra_app_id": AGENT, "metadata": {"a": 1}},
        headers={"Authorization": f"Bearer {lkps.user_token('alice')}", "X-Request-ID": "req-42"},
    )
    assert response.headers["x-request-id"] == "req-42"
    record = (await lkps.audit_records())[-1]
    assert record.event == "session.start"
    assert record.outcome == "granted" and record.status == 200
    assert record.request_id == "req-42"
    assert record.actor_cwid == "alice"
    assert record.actor_tenant_id == lkps.entra.tenant_id
    assert record.actor_object_id  # tid + oid key users, not the display name
    assert record.client_app_id == "11111111-1111-4111-8111-111111111111"
    assert record.agent_id == AGENT
    assert record.room_name == response.json()["room_name"]
    assert record.client_ip == "203.0.113.7"
    assert record.reason == "client pre-authorized (file)"
    details = record.as_json()["details"]
    assert details["session_id"] == response.json()["session_id"]
    assert response.json()["participant_token"] not in str(record.as_json())


@pytest.mark.parametrize(
    ("case", "status", "reason_fragment"),
    [
        ("bad-token", 401, "malformed token"),
        ("no-agent-id", 400, "agent_entra_app_id"),
        ("not-authorized", 403, "not pre-authorized"),
        ("not-connected", 404, "no live registration"),
    ],
)
async def test_denials_are_recorded_with_status_and_reason(
    lkps: Lkps, case: str, status: int, reason_fragment: str
) -> None:
    if case == "not-authorized":
        await lkps.register()
    token = {"bad-token": "garbage", "not-authorized": lkps.user_token(client=CLIENT_B)}.get(
        case, lkps.user_token()
    )
    body = {} if case == "no-agent-id" else {"agent_entra_app_id": AGENT}
    response = await lkps.post("/api/session/start", token, body)
    assert response.status_code == status
    record = (await lkps.audit_records())[-1]
    assert (record.event, record.outcome, record.status) == ("session.start", "denied", status)
    assert record.reason is not None and reason_fragment in record.reason
    assert record.request_id == response.headers["x-request-id"]
    # The caller sees the contract's message, not the internal reason.
    assert reason_fragment not in response.json()["message"] or status == 400


async def test_every_event_type_lands_in_one_intact_chain(lkps: Lkps) -> None:
    registration = (await lkps.register()).json()["registration_id"]
    await lkps.register(registration_id=registration)
    await lkps.start_session()
    await lkps.deregister()
    records = await lkps.audit_records()
    assert [r.event for r in records] == [
        "agent.register",
        "agent.renew",
        "session.start",
        "agent.deregister",
    ]
    assert records[0].prev_hash == GENESIS_HASH
    assert [r.seq for r in records] == [1, 2, 3, 4]
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
    assert (await lkps.services.audit.verify()).ok


async def test_database_refuses_to_change_audit_records(lkps: Lkps, store_sql: StoreSql) -> None:
    await lkps.register()
    with pytest.raises(StoreRefused, match="append-only"):
        await store_sql.execute("UPDATE audit_records SET actor_cwid = 'mallory'")
    with pytest.raises(StoreRefused, match="append-only"):
        await store_sql.execute("DELETE FROM audit_records")
    assert await store_sql.scalar("SELECT count(*) FROM audit_records") == 1
    assert (
        await store_sql.scalar("SELECT count(*) FROM audit_records WHERE actor_cwid = 'mallory'")
        == 0
    )


async def test_store_failure_gives_503_and_no_token(lkps: Lkps, store_sql: StoreSql) -> None:
    await lkps.register()
    await store_sql.execute("DROP TABLE audit_records")
    response = await lkps.start_session()
    assert response.status_code == 503
    assert response.headers["retry-after"]
    body = response.json()
    assert body["error"] == "service_unavailable"
    assert "participant_token" not in body
    for engine in ("sqlite", "postgres", "asyncpg", "audit_records"):
        assert engine not in response.text.lower()


async def test_store_failure_on_registration_gives_503_no_token_and_no_presence(
    lkps: Lkps, store_sql: StoreSql
) -> None:
    await store_sql.execute("DROP TABLE audit_records")
    response = await lkps.register(enforce_client_authz=False)
    assert response.status_code == 503
    assert "token" not in response.json()
    live = "SELECT count(*) FROM agent_registrations WHERE ended_at IS NULL"
    assert await store_sql.scalar(live) == 0


async def test_200_parallel_session_starts(lkps: Lkps) -> None:
    await lkps.register()
    tokens = [lkps.user_token(f"user{i}") for i in range(200)]
    responses = await asyncio.gather(*(lkps.start_session(token=token) for token in tokens))
    assert [r.status_code for r in responses] == [200] * 200
    rooms = {r.json()["room_name"] for r in responses}
    assert len(rooms) == 200
    sessions = [r for r in await lkps.audit_records() if r.event == "session.start"]
    assert len(sessions) == 200
    assert {r.room_name for r in sessions} == rooms
    verification = await lkps.services.audit.verify()
    assert verification.ok and verification.records_checked == 201
    assert lkps.services.audit.batches_written < 201  # group commit did batch
