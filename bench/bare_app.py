"""The bare token endpoint LKPS is compared with: the same LiveKit participant token,
minted with livekit-api exactly as `lkps.livekit.TokenMinter` mints it (same grants,
same room configuration, same lifetime), and nothing else: no authentication, no rate
limit, no presence or authorization lookup, no audit record, no database.

It reads and parses the JSON body (the metadata goes into the agent dispatch) and
answers the same JSON shape on the same path, so the load generators drive both
servers with the same requests.

    uvicorn bare_app:app --app-dir bench --workers 2

`durable_app` is the same endpoint plus the least database work a token server that
fails closed must do, written as directly as asyncpg allows: per request one indexed
read (the agent's row in LKPS's agents table) and one insert committed before
the answer (a plain table, autocommit, no hash chain, no batching). It is the yardstick
for what LKPS's own work costs beyond what any durable token server pays.

    BARE_DATABASE_URL=postgresql://... uvicorn bare_app:durable_app --app-dir bench

Both also receive LiveKit's webhooks (`POST /api/livekit/webhook`, for bench/webhooks.py
`--server bare|durable`): `app` verifies each with livekit-api's `WebhookReceiver`, as
LKPS does, and answers; `durable_app` then applies a followed event as the least a
receiver that keeps a session's steps must: one conditional UPDATE of the session's row
in LKPS's sessions table and, when it changed the row, one insert, in one transaction
per event (no batching, no hash chain, no metrics, no request ids).
"""

from __future__ import annotations

import json
import os
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from livekit.api import AccessToken, TokenVerifier, VideoGrants, WebhookReceiver
from livekit.protocol.agent_dispatch import RoomAgentDispatch
from livekit.protocol.models import ParticipantInfo
from livekit.protocol.room import RoomConfiguration
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

API_KEY = os.environ.get("BARE_LIVEKIT_API_KEY", "APIbench")
API_SECRET = os.environ.get("BARE_LIVEKIT_API_SECRET", "bare-bench-secret-" + "x" * 32)
LIVEKIT_URL = os.environ.get("BARE_LIVEKIT_URL", "wss://livekit.bench.invalid")
TTL = timedelta(seconds=900)
MAX_PARTICIPANTS = 2
DEPARTURE_TIMEOUT_SECONDS = 30
# What LKPS would take from the caller's token; fixed here, as there is no token.
IDENTITY = "bench_user"
NAME = "Bench User"


def mint(agent_id: str, metadata: dict[str, Any] | None) -> tuple[str, str, datetime]:
    now = datetime.now(UTC)
    room = f"{IDENTITY}-{agent_id}-{int(now.timestamp())}-{secrets.token_hex(8)}"
    dispatch = (
        json.dumps(metadata, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        if metadata is not None
        else ""
    )
    config = RoomConfiguration(
        max_participants=MAX_PARTICIPANTS,
        sync_streams=True,
        departure_timeout=DEPARTURE_TIMEOUT_SECONDS,
        agents=[RoomAgentDispatch(agent_name=agent_id, metadata=dispatch)],
    )
    grants = VideoGrants(
        room_join=True, room=room, can_publish=True, can_subscribe=True, can_publish_data=True
    )
    token = (
        AccessToken(API_KEY, API_SECRET)
        .with_ttl(TTL)
        .with_identity(IDENTITY)
        .with_grants(grants)
        .with_room_config(config)
        .with_name(NAME)
    )
    return room, token.to_jwt(), now + TTL


def started(room: str, jwt: str, session_id: uuid.UUID, expires_at: datetime) -> JSONResponse:
    """LKPS's session-start answer, in the same shape."""
    return JSONResponse(
        {
            "room_name": room,
            "livekit_url": LIVEKIT_URL,
            "participant_token": jwt,
            "session_id": str(session_id),
            "expires_at": expires_at.isoformat(),
        }
    )


async def start(request: Request) -> JSONResponse:
    body = json.loads(await request.body())
    room, jwt, expires_at = mint(str(uuid.UUID(body["agent_entra_app_id"])), body.get("metadata"))
    return started(room, jwt, uuid.uuid4(), expires_at)


_RECEIVER = WebhookReceiver(TokenVerifier(API_KEY, API_SECRET))


def received(body: bytes, authorization: str) -> Any:
    return _RECEIVER.receive(body.decode(), authorization.removeprefix("Bearer ").strip())


async def webhook(request: Request) -> JSONResponse:
    received(await request.body(), request.headers.get("authorization", ""))
    return JSONResponse({"applied": False})


_POOL: asyncpg.Pool | None = None
# The agent's row (the benchmark registered it; its registrations may have lapsed by the
# time this runs, and a 404 would skip the insert).
_PRESENT = "SELECT enforce_client_authz FROM agents WHERE agent_id = $1"
_RECORD = "INSERT INTO bare_audit (record_id, occurred_at, room_name) VALUES ($1, $2, $3)"


async def start_durably(request: Request) -> JSONResponse:
    assert _POOL is not None
    body = json.loads(await request.body())
    agent_id = str(uuid.UUID(body["agent_entra_app_id"]))
    async with _POOL.acquire() as connection:
        if await connection.fetchval(_PRESENT, agent_id) is None:
            return JSONResponse({"error": "agent_not_connected"}, status_code=404)
        room, jwt, expires_at = mint(agent_id, body.get("metadata"))
        session_id = uuid.uuid4()
        await connection.execute(_RECORD, session_id, datetime.now(UTC), room)
    return started(room, jwt, session_id, expires_at)


# A step per followed event: its column set once, while it is still null. The columns
# are these three names, never input.
_STEPS = {
    column: f"UPDATE sessions SET {column} = $2 WHERE room_name = $1 AND {column} IS NULL"  # noqa: S608
    " RETURNING session_id"
    for column in ("client_joined_at", "agent_joined_at", "ended_at")
}


def step_column(event: Any) -> str | None:
    if event.event == "room_finished":
        return "ended_at"
    if event.event == "participant_joined":
        agent = event.participant.kind == ParticipantInfo.Kind.AGENT
        return "agent_joined_at" if agent else "client_joined_at"
    return None


async def webhook_durably(request: Request) -> JSONResponse:
    assert _POOL is not None
    event = received(await request.body(), request.headers.get("authorization", ""))
    column = step_column(event)
    if column is None:
        return JSONResponse({"applied": False})
    now = datetime.now(UTC)
    async with _POOL.acquire() as connection, connection.transaction():
        changed = await connection.fetchval(_STEPS[column], event.room.name, now)
        if changed is not None:
            await connection.execute(_RECORD, uuid.uuid4(), now, event.room.name)
    return JSONResponse({"applied": changed is not None})


@asynccontextmanager
async def database(_: Starlette) -> AsyncIterator[None]:
    global _POOL
    _POOL = await asyncpg.create_pool(os.environ["BARE_DATABASE_URL"], min_size=20, max_size=20)
    await _POOL.execute(
        "CREATE TABLE IF NOT EXISTS bare_audit (record_id uuid PRIMARY KEY,"
        " occurred_at timestamptz NOT NULL, room_name text NOT NULL)"
    )
    try:
        yield
    finally:
        await _POOL.close()


async def ready(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ready"})


app = Starlette(
    routes=[
        Route("/api/session/start", start, methods=["POST"]),
        Route("/api/livekit/webhook", webhook, methods=["POST"]),
        Route("/api/health/ready", ready),
    ]
)

durable_app = Starlette(
    routes=[
        Route("/api/session/start", start_durably, methods=["POST"]),
        Route("/api/livekit/webhook", webhook_durably, methods=["POST"]),
        Route("/api/health/ready", ready),
    ],
    lifespan=database,
)
