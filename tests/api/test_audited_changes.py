"""No change without its record (issue 12 §2): each audited state change and its audit
record are committed together or not at all, on both stores.

The store itself refuses the record (a trigger on `audit_records`, as a constraint or
an operator's rule would): the caller gets 503 with the contract's body, and the
change is not in effect. The store refuses the change: no record claims it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.api.test_admin import admin, get, put_override
from tests.backends import REFUSAL, StoreSql
from tests.conftest import AGENT, CLIENT_B, FakeClock, Lkps

pytestmark = pytest.mark.api

SET, CLEAR = "admin.authz_override.set", "admin.authz_override.clear"
REGISTER, RENEW, DEREGISTER = "agent.register", "agent.renew", "agent.deregister"
EXPIRE = "agent.expire"
LIVE = "SELECT count(*) FROM agent_registrations WHERE ended_at IS NULL"


async def refuse_records(store_sql: StoreSql, event: str, outcome: str = "granted") -> None:
    """The store refuses every `outcome` record of `event`, and no other."""
    await store_sql.refuse(
        "refuse_record",
        "INSERT",
        "audit_records",
        f"NEW.event = '{event}' AND NEW.outcome = '{outcome}'",
    )


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert set(body) == {"error", "message", "request_id"}
    assert body["error"] == "service_unavailable"
    assert body["request_id"] == response.headers["x-request-id"]
    assert response.headers["retry-after"]
    assert REFUSAL not in response.text


async def trail(lkps: Lkps) -> list[tuple[str, str, int]]:
    return [(r.event, r.outcome, r.status) for r in await lkps.audit_records()]


async def refused_attempt_is_recorded_as_denied(lkps: Lkps, event: str) -> None:
    """The attempt's record says it was denied with 503, and the chain is intact."""
    record = [r for r in await lkps.audit_records() if r.event == event][-1]
    assert (record.outcome, record.status) == ("denied", 503)
    assert record.reason is not None and record.reason.startswith("audit write failed")
    assert (await lkps.services.audit.verify()).ok


async def override_of(lkps: Lkps) -> Any:
    response = await get(lkps, f"/api/agents/{AGENT}/authorization", admin(lkps))
    return response.json() if response.status_code == 200 else response.status_code


async def agent_listed(lkps: Lkps) -> dict[str, Any] | None:
    agents = (await get(lkps, "/api/agents", admin(lkps))).json()["agents"]
    return next((a for a in agents if a["agent_id"] == AGENT), None)


async def test_an_override_is_not_set_when_its_record_is_refused(
    lkps: Lkps, store_sql: StoreSql
) -> None:
    assert (await put_override(lkps, admin(lkps), enforce_client_authz=True)).status_code == 200
    before = await override_of(lkps)
    await refuse_records(store_sql, SET)

    response = await put_override(
        lkps, admin(lkps), enforce_client_authz=False, additional_clients=[CLIENT_B]
    )

    assert_unavailable(response)
    assert await override_of(lkps) == before
    assert [t for t in await trail(lkps) if t[0] == SET] == [
        (SET, "granted", 200),
        (SET, "denied", 503),
    ]
    await refused_attempt_is_recorded_as_denied(lkps, SET)


async def test_an_override_is_not_cleared_when_its_record_is_refused(
    lkps: Lkps, store_sql: StoreSql
) -> None:
    assert (await put_override(lkps, admin(lkps), enforce_client_authz=False)).status_code == 200
    before = await override_of(lkps)
    await refuse_records(store_sql, CLEAR)

    response = await lkps.http.delete(
        f"/api/agents/{AGENT}/authorization",
        headers={"Authorization": f"Bearer {admin(lkps)}"},
    )

    assert_unavailable(response)
    assert await override_of(lkps) == before
    await refused_attempt_is_recorded_as_denied(lkps, CLEAR)


async def test_a_deregistration_is_not_made_when_its_record_is_refused(
    lkps: Lkps, store_sql: StoreSql
) -> None:
    assert (await lkps.register(enforce_client_authz=False)).status_code == 200
    await refuse_records(store_sql, DEREGISTER)

    assert_unavailable(await lkps.deregister())

    assert await store_sql.scalar(LIVE) == 1
    assert (await lkps.start_session()).status_code == 200  # still dispatchable
    await refused_attempt_is_recorded_as_denied(lkps, DEREGISTER)


async def test_a_registration_is_not_made_when_its_record_is_refused(
    lkps: Lkps, store_sql: StoreSql
) -> None:
    await refuse_records(store_sql, REGISTER)

    response = await lkps.register(enforce_client_authz=False, version="1.0")

    assert_unavailable(response)
    assert "token" not in response.json()
    # Nothing of it at all: no registration (live or ended), no agent.
    assert await store_sql.scalar("SELECT count(*) FROM agent_registrations") == 0
    assert await agent_listed(lkps) is None
    assert (await lkps.start_session()).status_code == 404
    await refused_attempt_is_recorded_as_denied(lkps, REGISTER)


async def test_a_renewal_is_not_applied_when_its_record_is_refused(
    lkps: Lkps, store_sql: StoreSql, clock: FakeClock
) -> None:
    first = await lkps.register(enforce_client_authz=False, version="1.0")
    registration = first.json()["registration_id"]
    clock.advance(60)
    await refuse_records(store_sql, RENEW)

    response = await lkps.register(
        registration_id=registration, enforce_client_authz=True, version="2.0"
    )

    assert_unavailable(response)
    assert "token" not in response.json()
    listed = await agent_listed(lkps)
    assert listed is not None
    assert (listed["version"], listed["enforce_client_authz"]) == ("1.0", False)
    clock.advance(40)  # past the first registration's presence TTL (90 s): not extended
    assert (await lkps.start_session()).status_code == 404
    assert RENEW not in {event for event, _, _ in await trail(lkps)}
    # Denials are recorded under the endpoint's event, as any other refused renewal.
    await refused_attempt_is_recorded_as_denied(lkps, REGISTER)


async def test_a_lapse_is_not_claimed_when_its_record_is_refused(
    lkps: Lkps, store_sql: StoreSql, clock: FakeClock
) -> None:
    registration = (await lkps.register()).json()["registration_id"]
    await refuse_records(store_sql, EXPIRE, "recorded")
    clock.advance(91)
    sweeper = lkps.services.sweeper

    with pytest.raises(Exception, match="temporarily unavailable"):
        await sweeper.sweep()

    assert await store_sql.scalar(LIVE) == 1  # not ended: a later sweep claims it
    await store_sql.allow("refuse_record", "audit_records")
    await sweeper.sweep()  # (or the background sweep already did)
    assert await store_sql.scalar(LIVE) == 0
    expired = [r for r in await lkps.audit_records() if r.event == EXPIRE]
    assert [r.registration_id for r in expired] == [registration]


async def test_each_change_is_saved_with_its_record(lkps: Lkps, clock: FakeClock) -> None:
    registration = (await lkps.register(enforce_client_authz=False)).json()["registration_id"]
    clock.advance(60)
    assert (await lkps.register(registration_id=registration, version="2.0")).status_code == 200
    assert (await put_override(lkps, admin(lkps), enforce_client_authz=True)).status_code == 200
    set_override = await override_of(lkps)
    response = await lkps.http.delete(
        f"/api/agents/{AGENT}/authorization",
        headers={"Authorization": f"Bearer {admin(lkps)}"},
    )
    assert response.status_code == 204
    assert await override_of(lkps) == 404
    clock.advance(60)  # past the first registration's TTL, within the renewal's
    listed = await agent_listed(lkps)
    assert listed is not None and listed["active_registrations"] == 1
    assert listed["version"] == "2.0"
    assert (await lkps.deregister()).status_code == 204
    assert (await lkps.start_session()).status_code == 404

    records = await lkps.audit_records()
    assert [(r.event, r.outcome) for r in records] == [
        (REGISTER, "granted"),
        (RENEW, "granted"),
        (SET, "granted"),
        (CLEAR, "granted"),
        (DEREGISTER, "granted"),
        ("session.start", "denied"),
    ]
    details = [r.as_json()["details"] for r in records]
    assert details[2]["before"] is None
    assert details[2]["after"]["enforce_client_authz"] is True
    assert details[3]["before"]["enforce_client_authz"] is True
    assert set_override["enforce_client_authz"] is True
    assert details[4]["ended_registrations"] == [registration]
    assert records[0].registration_id == records[1].registration_id == registration
    assert (await lkps.services.audit.verify()).ok


@pytest.mark.parametrize(
    ("event", "operation", "table"),
    [(SET, "INSERT", "agent_authz_overrides"), (DEREGISTER, "UPDATE", "agent_registrations")],
)
async def test_a_refused_change_has_no_record_claiming_it(
    lkps: Lkps, store_sql: StoreSql, event: str, operation: str, table: str
) -> None:
    assert (await lkps.register(enforce_client_authz=False)).status_code == 200
    await store_sql.refuse("refuse_change", operation, table, "1 = 1")

    if event == SET:
        response = await put_override(lkps, admin(lkps), enforce_client_authz=True)
    else:
        response = await lkps.deregister()

    assert_unavailable(response)
    assert (event, "granted", 200) not in await trail(lkps)
    assert (event, "granted", 204) not in await trail(lkps)
    record = (await lkps.audit_records())[-1]
    assert (record.event, record.outcome, record.status) == (event, "denied", 503)
    assert record.reason is not None and record.reason.startswith("store unavailable")
    assert "before" not in (record.as_json()["details"] or {})
    assert await override_of(lkps) == 404
    assert await store_sql.scalar(LIVE) == 1


async def test_changes_and_session_starts_under_way_together_share_one_intact_chain(
    lkps: Lkps,
) -> None:
    """Changes chain in transactions of their own while the group-commit writer chains
    session starts: they queue on the chain head, and no record is lost or duplicated."""
    assert (await lkps.register(enforce_client_authz=False)).status_code == 200
    agents = [f"00000000-0000-4000-8000-{n:012d}" for n in range(8)]
    responses = await asyncio.gather(
        *(lkps.start_session(token=lkps.user_token(f"user{n}")) for n in range(60)),
        *(put_override(lkps, admin(lkps), agent, enforce_client_authz=True) for agent in agents),
        *(lkps.register(enforce_client_authz=False) for _ in range(6)),
    )
    assert [r.status_code for r in responses] == [200] * len(responses)
    records = await lkps.audit_records()
    assert len(records) == 1 + len(responses)
    assert len({r.record_id for r in records}) == len(records)
    assert sorted(str(r.agent_id) for r in records if r.event == SET) == agents
    verification = await lkps.services.audit.verify()
    assert verification.ok and verification.records_checked == len(records)
