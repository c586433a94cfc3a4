"""The fault tests' clients: every request they make and what came back, so that a test
can account for each answer against the audit trail and the logs."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from lkps.audit import AuditLog, AuditRecord, ChainVerification
from lkps.store import Database
from tests.audit_keys import audit_keys_for
from tests.processes import Replica

SESSION_START = "/api/session/start"
TOKEN_ENDPOINT = "/api/session/token"
REGISTER = "/api/agent/register"
HEARTBEAT = "/api/agent/heartbeat"
DEREGISTER = "/api/agent/deregister"
# Endpoints whose every answer is an audit record (heartbeats are not audited).
AUDITED = frozenset({SESSION_START, TOKEN_ENDPOINT, REGISTER, DEREGISTER})
# Something shaped like a JWT: what no error body may ever carry.
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Exchange:
    replica: str
    path: str
    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    error: str | None  # the transport error's type, when there was no answer
    request_id: str | None  # the answer's X-Request-ID
    headers: dict[str, str]
    body: Any  # parsed JSON, else the text
    sent_at: float  # time.monotonic()
    done_at: float
    tag: str = ""  # what the test calls this request

    @property
    def answered(self) -> bool:
        return self.status is not None

    @property
    def audited(self) -> bool:
        """Answered with its own audit record. Rejected tokens (401) are recorded at a
        bounded rate instead (once per source and kind of failure a window), so they
        are checked apart: `rejections_recorded`."""
        return self.answered and self.path in AUDITED and self.status != 401

    def field(self, name: str) -> Any:
        return self.body.get(name) if isinstance(self.body, dict) else None


@dataclass
class Traffic:
    """What the clients of one test saw, and every token they sent or received."""

    exchanges: list[Exchange] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)

    async def post(
        self,
        http: httpx.AsyncClient,
        replica: Replica,
        path: str,
        token: str,
        body: dict[str, Any] | None = None,
        *,
        tag: str = "",
        wait: float = 15.0,
    ) -> Exchange:
        self.secrets.add(token)
        sent = time.monotonic()
        try:
            response = await http.post(
                replica.url + path,
                json=body or {},
                headers={"Authorization": f"Bearer {token}"},
                timeout=wait,
            )
        except httpx.TransportError as exc:
            exchange = Exchange(
                replica=replica.name,
                path=path,
                status=None,
                error=type(exc).__name__,
                request_id=None,
                headers={},
                body=None,
                sent_at=sent,
                done_at=time.monotonic(),
                tag=tag,
            )
        else:
            try:
                parsed: Any = response.json()
            except ValueError:
                parsed = response.text
            for name in ("participant_token", "token"):
                if isinstance(parsed, dict) and isinstance(parsed.get(name), str):
                    self.secrets.add(parsed[name])
            exchange = Exchange(
                replica=replica.name,
                path=path,
                status=response.status_code,
                error=None,
                request_id=response.headers.get("x-request-id"),
                headers=dict(response.headers),  # lower-case names
                body=parsed,
                sent_at=sent,
                done_at=time.monotonic(),
                tag=tag,
            )
        self.exchanges.append(exchange)
        return exchange

    def select(
        self,
        path: str | None = None,
        *,
        status: int | None = None,
        replica: str | None = None,
        answered: bool | None = None,
        tag: str | None = None,
    ) -> list[Exchange]:
        return [
            e
            for e in self.exchanges
            if (path is None or e.path == path)
            and (status is None or e.status == status)
            and (replica is None or e.replica == replica)
            and (answered is None or e.answered == answered)
            and (tag is None or e.tag == tag)
        ]

    def statuses(self, path: str | None = None) -> Counter[int | None]:
        return Counter(e.status for e in self.select(path))

    def request_ids(self, exchanges: Iterable[Exchange] | None = None) -> set[str]:
        chosen = self.exchanges if exchanges is None else exchanges
        return {e.request_id for e in chosen if e.request_id}


def check_error_body(exchange: Exchange) -> None:
    """The contract's error: `{"error", "message", "request_id"}` matching the header,
    and nothing token-shaped anywhere in it."""
    body = exchange.body
    assert isinstance(body, dict), f"{exchange.status} without a JSON body: {body!r}"
    assert {"error", "message", "request_id"} <= body.keys(), body
    assert body["request_id"] == exchange.request_id, (body, exchange.request_id)
    assert not JWT.search(json.dumps(body)), f"a token in a {exchange.status} body: {body}"
    assert "token" not in body and "participant_token" not in body, body


async def keep_going(stop: asyncio.Event, action: Callable[[int], Awaitable[object]]) -> None:
    """Call `action(0)`, `action(1)`, ... one after another until `stop` is set."""
    for n in itertools.count():
        if stop.is_set():
            return
        await action(n)


def spread(replicas: Sequence[Replica], offset: int) -> Callable[[int], Replica]:
    """Round robin over `replicas`, each load worker starting somewhere else."""
    return lambda n: replicas[(n + offset) % len(replicas)]


def http_client(connections: int = 32) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    )


# The store, read the way LKPS reads it.


async def read_audit(database_url: str) -> list[AuditRecord]:
    db = Database.from_url(database_url, pool_size=1)
    try:
        return [record async for record in AuditLog(db).records()]
    finally:
        await db.dispose()


async def verify_audit(database_url: str) -> ChainVerification:
    """What `lkps audit verify` checks, in this process (the CLI costs a start-up), with
    the audit key of the test servers on that store."""
    db = Database.from_url(database_url, pool_size=1)
    try:
        return await AuditLog(db, keys=audit_keys_for(database_url)).verify()
    finally:
        await db.dispose()


def details(record: AuditRecord) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(record.details) if record.details else {}
    return parsed


def granted_sessions_without_record(
    traffic: Traffic, records: Sequence[AuditRecord]
) -> list[Exchange]:
    """200 session starts whose granted `session.start` record is missing, or says
    another room, session or request than the answer did."""
    recorded = {
        r.request_id: r
        for r in records
        if r.event == "session.start" and r.outcome == "granted" and r.status == 200
    }
    missing = []
    for exchange in traffic.select(SESSION_START, status=200):
        record = recorded.get(exchange.request_id or "")
        if (
            record is None
            or record.room_name != exchange.field("room_name")
            or details(record).get("session_id") != exchange.field("session_id")
        ):
            missing.append(exchange)
    return missing


def records_nobody_saw(traffic: Traffic, records: Sequence[AuditRecord]) -> list[AuditRecord]:
    """Records of requests whose answer no client received as that record's status
    (e.g. committed, then the connection died before the answer went out)."""
    answered = {e.request_id: e.status for e in traffic.exchanges if e.request_id}
    return [
        r
        for r in records
        if r.event != "agent.expire" and answered.get(r.request_id or "") != r.status
    ]


def answered_records(records: Sequence[AuditRecord]) -> list[AuditRecord]:
    """The records each answer has one of: all but rejected tokens' (see `audited`)."""
    return [record for record in records if record.status != 401]


def rejections_recorded(traffic: Traffic, records: Sequence[AuditRecord]) -> list[str]:
    """Problems with the rejected tokens' records: one that no client saw answered 401,
    or 401s answered with none recorded at all."""
    rejected = {e.request_id for e in traffic.exchanges if e.path in AUDITED and e.status == 401}
    recorded = {record.request_id for record in records if record.status == 401}
    problems = [f"401 record {rid} that no client saw" for rid in recorded - rejected]
    if rejected and not recorded:
        problems.append(f"{len(rejected)} rejected tokens and no record of any")
    return problems
