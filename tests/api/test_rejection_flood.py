"""An unauthenticated flood cannot grow the audit trail faster than a set rate, and what
it quotes is bounded; valid requests are recorded as ever."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from lkps.audit.log import REASON_LIMIT
from tests.api.util import running_lkps
from tests.conftest import AGENT, FakeClock, Lkps

pytestmark = pytest.mark.api


def forged(alg: str) -> str:
    header = base64.urlsafe_b64encode(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{header.decode().rstrip('=')}.e30.c2ln"


async def test_repeated_rejections_leave_one_record_and_a_count(
    lkps: Lkps, clock: FakeClock
) -> None:
    await lkps.register()
    for _ in range(25):
        response = await lkps.post("/api/session/start", "garbage", {"agent_entra_app_id": AGENT})
        assert response.status_code == 401
    rejected = [r for r in await lkps.audit_records() if r.status == 401]
    assert len(rejected) == 1
    # Valid attempts are recorded one for one meanwhile.
    assert (await lkps.start_session()).status_code == 200
    assert (await lkps.audit_records())[-1].status == 200
    clock.advance(61)
    assert (await lkps.post("/api/session/start", "garbage", {})).status_code == 401
    rejected = [r for r in await lkps.audit_records() if r.status == 401]
    assert len(rejected) == 2
    assert rejected[-1].as_json()["details"]["unrecorded_since_last"] == 24


async def test_what_a_rejection_quotes_is_bounded(lkps: Lkps) -> None:
    response = await lkps.post("/api/session/start", forged("A" * 12_000), {})
    assert response.status_code == 401
    record = (await lkps.audit_records())[-1]
    assert record.reason is not None and record.reason.startswith("algorithm 'AAAA")
    assert len(record.reason) == REASON_LIMIT


async def test_varying_what_is_quoted_does_not_make_new_records(lkps: Lkps) -> None:
    for n in range(20):
        assert (await lkps.post("/api/session/start", forged(f"HS{n}"), {})).status_code == 401
    rejected = [r for r in await lkps.audit_records() if r.status == 401]
    assert len(rejected) == 1


async def test_the_bound_holds_across_sources(
    settings_values: dict[str, Any], clock: FakeClock, entra: Any
) -> None:
    settings = {**settings_values, "audit_rejections_per_window": 3}
    async with running_lkps(settings, clock, entra) as lkps:
        for n in range(30):
            source = httpx.ASGITransport(app=lkps.app, client=(f"198.51.100.{n}", 50000))
            async with httpx.AsyncClient(transport=source, base_url="http://lkps") as http:
                response = await http.post(
                    "/api/session/start", json={}, headers={"Authorization": "Bearer garbage"}
                )
            assert response.status_code == 401
        assert len([r for r in await lkps.audit_records() if r.status == 401]) == 3
