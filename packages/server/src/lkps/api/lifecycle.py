"""Sessions after their grant: LiveKit's webhooks in (`POST /api/livekit/webhook`), and
each session with its steps out (`GET /api/sessions/{id}`, `GET /api/sessions`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BeforeValidator
from starlette.requests import Request

from lkps.api.audit import zoned_datetime
from lkps.api.body import read_limited
from lkps.api.deps import BearerDoc, ServicesDep, authenticate
from lkps.api.openapi import error_responses
from lkps.api.schemas import AgentId, SessionList, SessionStep, SessionView, WebhookAnswer
from lkps.errors import LKPSError
from lkps.livekit.webhooks import MAX_WEBHOOK_BYTES
from lkps.metrics import LIVEKIT_WEBHOOKS, Children
from lkps.sessions.records import SessionFacts, SessionState

router = APIRouter(tags=["sessions"])

# Label values for the webhook metric: LiveKit's events, anything else as "other".
_EVENTS = frozenset(
    {
        "room_started",
        "room_finished",
        "participant_joined",
        "participant_left",
        "participant_connection_aborted",
        "track_published",
        "track_unpublished",
        "egress_started",
        "egress_updated",
        "egress_ended",
        "ingress_started",
        "ingress_ended",
    }
)
_webhooks = Children(LIVEKIT_WEBHOOKS)
MAX_PAGE = 1000


@router.post(
    "/api/livekit/webhook",
    response_model=WebhookAnswer,
    responses=error_responses(400, 401, 413, 503),
)
async def livekit_webhook(request: Request, services: ServicesDep) -> WebhookAnswer:
    """LiveKit's webhooks (livekit-server `webhook.urls`, signed with LKPS's API key):
    each moves the session of its room on. Answers 200 for every verified event, one
    that changes nothing included (repeats, rooms LKPS did not grant)."""
    try:
        body = await read_limited(request, MAX_WEBHOOK_BYTES)
        event = services.webhooks.verify(body, request.headers.get("authorization"))
    except LKPSError:
        _webhooks("-", "refused").inc()
        raise
    applied = await services.lifecycle.apply(event)
    name = event.event if event.event in _EVENTS else "other"
    _webhooks(name, "applied" if applied else "ignored").inc()
    return WebhookAnswer(applied=applied)


@router.get(
    "/api/sessions/{session_id}",
    response_model=SessionView,
    dependencies=[BearerDoc],
    responses=error_responses(401, 404, 503),
)
async def get_session(request: Request, services: ServicesDep, session_id: str) -> SessionView:
    """One session and its steps: for the user who started it, the client app that
    started it (app-only), or `LKPS.Auditor`; 404 for anyone else."""
    caller = await authenticate(request, services)
    return session_view(await services.session_records.one(caller, session_id[:64]))


@router.get(
    "/api/sessions",
    response_model=SessionList,
    dependencies=[BearerDoc],
    responses=error_responses(400, 401, 403, 503),
)
async def list_sessions(
    request: Request,
    services: ServicesDep,
    agent: Annotated[AgentId | None, Query(description="The agent's app id")] = None,
    since: Annotated[
        datetime | None,
        BeforeValidator(zoned_datetime("since")),
        Query(description="granted_at >= since (ISO 8601 with a time zone)"),
    ] = None,
    state: Annotated[SessionState | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> SessionList:
    """Sessions, newest grant first (`LKPS.Auditor`)."""
    caller = await authenticate(request, services)
    found = await services.session_records.search(
        caller,
        agent_id=str(agent) if agent else None,
        since=since,
        state=str(state) if state else None,
        limit=limit,
    )
    return SessionList(sessions=[session_view(facts) for facts in found])


def session_view(facts: SessionFacts) -> SessionView:
    moments = [
        ("granted", facts.granted_at),
        ("client_joined", facts.client_joined_at),
        ("agent_missing", facts.agent_missing_at),
        ("agent_joined", facts.agent_joined_at),
        ("ended", facts.ended_at),
        ("reopened", facts.reopened_at),
    ]
    steps = sorted(
        (SessionStep(step=step, at=at) for step, at in moments if at is not None),
        key=lambda step: step.at,
    )
    return SessionView(
        session_id=facts.session_id,
        room_name=facts.room_name,
        agent_id=facts.agent_id,
        state=facts.state,
        final_state=facts.final_state,
        via=facts.via,
        cwid=facts.actor_cwid,
        client_app_id=facts.client_app_id,
        app_only=facts.app_only,
        granted_at=facts.granted_at,
        client_joined_at=facts.client_joined_at,
        agent_joined_at=facts.agent_joined_at,
        ended_at=facts.ended_at,
        duration_seconds=facts.duration_seconds,
        room_sid=facts.room_sid,
        client_identity=facts.client_identity,
        client_sid=facts.client_sid,
        agent_identity=facts.agent_identity,
        agent_sid=facts.agent_sid,
        job_id=facts.job_id,
        agent_missing_at=facts.agent_missing_at,
        redispatched=facts.no_show_stage > 0,
        redispatch_id=facts.redispatch_id,
        reopened_at=facts.reopened_at,
        reopened_room_sid=facts.reopened_room_sid,
        steps=steps,
    )
