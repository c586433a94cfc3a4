"""Session start: `POST /api/session/start` (LKPS's own body) and
`POST /api/session/token` (LiveKit's standardized token-endpoint body, so LiveKit client
SDKs' endpoint `TokenSource` works against LKPS with just an `Authorization` header).

Both run the same audited flow; only how the request is read differs.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from lkps.api.body import read_json_body
from lkps.api.deps import BearerDoc, RequestContextDep, ServicesDep, authenticate
from lkps.api.openapi import error_responses, json_body
from lkps.api.schemas import (
    SessionStartRequest,
    SessionStartResponse,
    TokenSourceRequest,
    TokenSourceResponse,
)
from lkps.audit import AuditEvent, RequestContext
from lkps.limits.limiter import Limit
from lkps.services import Services
from lkps.sessions import StartedSession
from lkps.sessions.metadata import ClientMetadata, dispatch_metadata

router = APIRouter(prefix="/api/session", tags=["sessions"])

SESSION_FAILED = "Session creation failed"


@dataclass(frozen=True, slots=True)
class WantedSession:
    agent_id: uuid.UUID
    metadata: ClientMetadata | None


RequestReader = Callable[[Request, Services], Awaitable[WantedSession]]


async def start_audited(
    request: Request,
    services: Services,
    context: RequestContext,
    read: RequestReader,
    via: str,
    *,
    granted_status: int = 200,
) -> StartedSession:
    # The audit record and the log line carry the status the caller will see.
    async with services.audit_scope(
        AuditEvent.SESSION_START,
        context,
        failure_message=SESSION_FAILED,
        granted_status=granted_status,
    ) as audit:
        caller = await authenticate(request, services, audit)
        await services.limits.check(Limit.SESSION_PER_CLIENT, caller.client_app_id)
        if not caller.app_only:
            await services.limits.check(Limit.SESSION_PER_USER, caller.subject_key)
        wanted = await read(request, services)
        audit.set(agent_id=str(wanted.agent_id))
        session = await services.sessions.start(caller, wanted.agent_id, wanted.metadata)
        audit.set(room_name=session.room_name)
        audit.detail(
            via=via,
            session_id=session.session_id,
            token_expires_at=session.participant_token.expires_at.isoformat(),
            metadata_bytes=len(dispatch_metadata(wanted.metadata).encode()),
        )
        audit.grant(reason=session.authorization_reason)
    return session


async def read_session_start(request: Request, services: Services) -> WantedSession:
    body = await read_json_body(
        request,
        SessionStartRequest,
        max_bytes=services.settings.max_body_bytes,
        json_text=["metadata"],
    )
    return WantedSession(body.agent_entra_app_id, body.metadata)


@router.post(
    "/start",
    response_model=SessionStartResponse,
    dependencies=[BearerDoc],
    openapi_extra=json_body(SessionStartRequest),
    responses=error_responses(400, 401, 403, 404, 413, 415, 429, 500, 503),
)
async def start_session(
    request: Request, services: ServicesDep, context: RequestContextDep
) -> SessionStartResponse:
    """Start a session with an agent: a new room, and a participant token whose room
    configuration makes LiveKit dispatch the agent into it."""
    session = await start_audited(request, services, context, read_session_start, "start")
    return SessionStartResponse(
        room_name=session.room_name,
        livekit_url=session.livekit_url,
        participant_token=session.participant_token.jwt,
        session_id=session.session_id,
        expires_at=session.participant_token.expires_at,
    )


# LiveKit's standardized token endpoint.


async def read_token_request(request: Request, services: Services) -> WantedSession:
    """`room_config.agents[0]`, the one thing a client names. `TokenSourceRequest`
    refuses everything LKPS chooses (and every other spelling of it), so that the document
    generated from it says exactly what is accepted."""
    body = await read_json_body(
        request, TokenSourceRequest, max_bytes=services.settings.max_body_bytes
    )
    (dispatch,) = body.room_config.agents
    return WantedSession(dispatch.agent_name, dispatch.metadata)


@router.post(
    "/token",
    status_code=201,
    response_model=TokenSourceResponse,
    dependencies=[BearerDoc],
    openapi_extra=json_body(TokenSourceRequest),
    responses=error_responses(400, 401, 403, 404, 413, 415, 429, 500, 503),
)
async def token_endpoint(
    request: Request, services: ServicesDep, context: RequestContextDep
) -> JSONResponse:
    """LiveKit's standard token endpoint: name the agent in
    `room_config.agents[0].agent_name`; LKPS chooses everything else, as for
    `/api/session/start`, with the same checks and the same audit record."""
    session = await start_audited(
        request, services, context, read_token_request, "token", granted_status=201
    )
    response = TokenSourceResponse(
        server_url=session.livekit_url,
        participant_token=session.participant_token.jwt,
        room_name=session.room_name,
        session_id=session.session_id,
        expires_at=session.participant_token.expires_at,
    )
    return JSONResponse(response.model_dump(mode="json"), status_code=201)
