"""The audit's `client_ip`, for requests through the application whose client address
(as the ASGI server hands it, from `X-Forwarded-For` behind a trusted gateway) is not
an IP address (issue 13)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from lkps_testkit import EntraDouble
from tests.conftest import AGENT, Lkps

pytestmark = pytest.mark.api


@pytest.mark.parametrize(
    ("host", "recorded"),
    [
        ("not-an-ip", "invalid:not-an-ip"),
        ('x"}{', "invalid:x___"),
        ("a" * 3000, "invalid:" + "a" * 56),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("a, b", "invalid:a__b"),
        ("198.51.100.23", "198.51.100.23"),
    ],
    ids=["not-an-ip", "json-breaking", "3000-chars", "ipv6", "list", "ipv4"],
)
async def test_the_audit_records_an_ip_or_a_marked_non_address(
    app: FastAPI, entra: EntraDouble, host: str, recorded: str
) -> None:
    transport = httpx.ASGITransport(app=app, client=(host, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://lkps.test") as http:
        lkps = Lkps(app, http, entra)
        assert (await lkps.register(AGENT, enforce_client_authz=False)).status_code == 200
        started = await lkps.start_session(AGENT)
        assert started.status_code == 200, started.text
        records = await lkps.audit_records()
    assert [record.client_ip for record in records] == [recorded, recorded]
    assert all(len(record.client_ip or "") <= 64 for record in records)
