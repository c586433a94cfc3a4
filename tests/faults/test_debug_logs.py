"""One `lkps serve` at LKPS_LOG_LEVEL=DEBUG through every kind of answer it gives
(registration, heartbeat, session starts on both endpoints, each refusal, Graph down),
then every line it wrote is checked: JSON, the request's id where it belongs to a
request, and not a fragment of any token or secret the test handed out or received,
nor of LKPS's own Graph tokens and client secret.

The other fault tests run the same log check at INFO on every process they start."""

from __future__ import annotations

import functools
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url

from lkps_testkit import EntraDouble, SigningKey
from tests.api.test_hostile_tokens import HOSTILE
from tests.backends import TestDatabase
from tests.conftest import AGENT, AGENT_2, CLIENT_A, CLIENT_B
from tests.faults.conftest import GraphBacked, Identities
from tests.faults.logs import assert_clean, check_logs
from tests.faults.traffic import (
    DEREGISTER,
    HEARTBEAT,
    REGISTER,
    SESSION_START,
    TOKEN_ENDPOINT,
    Exchange,
    Traffic,
    answered_records,
    check_error_body,
    http_client,
    read_audit,
    rejections_recorded,
)
from tests.processes import replicas

pytestmark = [pytest.mark.e2e, pytest.mark.backends("postgresql")]


async def test_debug_logs_hold_no_secret(
    database: TestDatabase,
    graph_backed: GraphBacked,
    identities: Identities,
    entra: EntraDouble,
    other_key: SigningKey,
    tmp_path: Path,
) -> None:
    graph = graph_backed.graph
    unasked = str(uuid.uuid4())  # an agent Graph will be down for when first asked about
    graph.applications |= {AGENT: [CLIENT_A], AGENT_2: [], unasked: [CLIENT_A]}
    env = graph_backed.env(database.url, LKPS_LOG_LEVEL="DEBUG")
    traffic = Traffic()
    expected: list[tuple[Exchange, int]] = []
    with replicas({"lkps": env}, tmp_path) as running:
        lkps = running["lkps"]
        async with http_client() as http:
            post = functools.partial(traffic.post, http, lkps)

            async def expect(status: int, path: str, token: str, body: dict[str, Any]) -> Exchange:
                exchange = await post(path, token, body)
                expected.append((exchange, status))
                return exchange

            agent, user = identities.agent(AGENT), identities.user(0)
            enforce = {"enforce_client_authz": True}
            registered = await expect(200, REGISTER, agent, enforce | {"version": "1.2.3"})
            await expect(200, REGISTER, identities.agent(AGENT_2), enforce)
            await expect(200, REGISTER, identities.agent(unasked), enforce)
            await expect(
                200, HEARTBEAT, agent, {"registration_id": registered.field("registration_id")}
            )
            start = {"agent_entra_app_id": AGENT, "metadata": {"language": "en"}}
            await expect(200, SESSION_START, user, start)
            await expect(
                201, TOKEN_ENDPOINT, user, {"room_config": {"agents": [{"agent_name": AGENT}]}}
            )
            await expect(403, SESSION_START, user, {"agent_entra_app_id": AGENT_2})
            await expect(403, SESSION_START, identities.user(1, client=CLIENT_B), start)
            await expect(404, SESSION_START, user, {"agent_entra_app_id": str(uuid.uuid4())})
            await expect(400, SESSION_START, user, {"agent_entra_app_id": "not-a-uuid"})
            await expect(403, REGISTER, user, {})  # a user's token on the agent endpoint
            for make_token in HOSTILE:
                await expect(401, SESSION_START, make_token(entra, other_key), start)
            graph.available = False
            await expect(503, SESSION_START, user, {"agent_entra_app_id": unasked})
            graph.available = True
            await expect(204, DEREGISTER, agent, {})
            await expect(404, SESSION_START, user, start)
        lkps.stop()
        log = lkps.log_text()

    assert [(e.path, e.status) for e, _ in expected] == [(e.path, s) for e, s in expected]
    for exchange, status in expected:
        if status >= 400:
            check_error_body(exchange)
    assert graph_backed.recorder.tokens, "LKPS never showed Graph a token: nothing to look for"

    report = check_logs({"lkps": log}, traffic, graph_backed.secrets)
    assert_clean(report)
    assert "debug" in report.levels  # DEBUG really was on
    records = await read_audit(database.url)
    audited = [e for e in traffic.exchanges if e.audited]
    answered = answered_records(records)
    assert {r.request_id for r in answered} == traffic.request_ids(audited)
    assert len(answered) == len(audited)
    assert rejections_recorded(traffic, records) == []
    password = make_url(database.url).password
    assert password and f":{password}@" not in log  # the store's credentials
    levels = Counter(line.split('"level": "', 1)[1].split('"', 1)[0] for line in log.splitlines())
    print(
        f"\n[debug-logs] {len(expected)} requests {dict(Counter(s for _, s in expected))}; "
        f"{len(traffic.secrets) + len(graph_backed.secrets)} secrets looked for "
        f"({len(graph_backed.recorder.tokens)} Graph tokens of LKPS's own) in "
        f"{report.lines} lines {dict(levels)}: {len(report.leaking)} leaking, "
        f"{len(report.not_json)} not JSON, {len(report.missing_request_id)} request lines "
        f"without an id; audit records {len(records)} = audited answers {len(audited)}"
    )
