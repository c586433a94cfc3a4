"""Session start: `POST /api/session/start` (LKPS's own body) and
`POST /api/session/token` (LiveKit's standardized token-endpoint body, so LiveKit client
SDKs' endpoint `TokenSource` works against LKPS with just an `Authorization` header).

Both run `SessionService.start`; only how the request is read, and the answer shaped,
differs.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from lkps.api.deps import BearerDoc, BodiesDep, RequestContextDep, ServicesDep, authenticate
from lkps.api.openapi import error_responses, json_body
from lkps.api.schemas import (
    SessionStartRequest,
    SessionStartResponse,
    TokenSourceRequest,
    TokenSourceResponse,
)
from lkps.audit import AuditEvent
from lkps.sessions import SESSION_FAILED, SessionRequest

router = APIRouter(prefix="/api/session", tags=["sessions"])


@router.post(
    "/start",
    response_model=SessionStartResponse,
    dependencies=[BearerDoc],
    openapi_extra=json_body(SessionStartRequest),
    responses=error_responses(400, 401, 403, 404, 413, 415, 429, 500, 503),
)
async def start_session(
    request: Request, services: ServicesDep, bodies: BodiesDep, context: RequestContextDep
) -> SessionStartResponse:
    """Start a session with an agent: a new room, and a participant token whose room
    configuration makes LiveKit dispatch the agent into it."""
    async with services.audit_scope(
        AuditEvent.SESSION_START, context, failure_message=SESSION_FAILED
    ) as audit:
        caller = await authenticate(request, services, audit)
        body = await bodies.read(request, SessionStartRequest, json_text=["metadata"])
        session = await services.sessions.start(
            caller, SessionRequest(body.agent_entra_app_id, body.metadata, via="start"), audit
        )
    return SessionStartResponse(
        room_name=session.room_name,
        livekit_url=session.livekit_url,
        participant_token=session.participant_token.jwt,
        session_id=session.session_id,
        expires_at=session.participant_token.expires_at,
    )


@router.post(
    "/token",
    status_code=201,
    response_model=TokenSourceResponse,
    dependencies=[BearerDoc],
    openapi_extra=json_body(TokenSourceRequest),
    responses=error_responses(400, 401, 403, 404, 413, 415, 429, 500, 503),
)
async def token_endpoint(
    request: Request, services: ServicesDep, bodies: BodiesDep, context: RequestContextDep
) -> JSONResponse:
    """LiveKit's standard token endpoint: name the agent in
    `room_config.agents[0].agent_name`; LKPS chooses everything else, as for
    `/api/session/start`, with the same checks and the same audit record.

    `TokenSourceRequest` refuses everything LKPS chooses (and every other spelling of
    it), so that the document generated from it says exactly what is accepted."""
    # The audit record and the log line carry the status the caller will see.
    async with services.audit_scope(
        AuditEvent.SESSION_START, context, failure_message=SESSION_FAILED, granted_status=201
    ) as audit:
        caller = await authenticate(request, services, audit)
        body = await bodies.read(request, TokenSourceRequest)
        (dispatch,) = body.room_config.agents
        session = await services.sessions.start(
            caller, SessionRequest(dispatch.agent_name, dispatch.metadata, via="token"), audit
        )
    response = TokenSourceResponse(
        server_url=session.livekit_url,
        participant_token=session.participant_token.jwt,
        room_name=session.room_name,
        session_id=session.session_id,
        expires_at=session.participant_token.expires_at,
    )
    return JSONResponse(response.model_dump(mode="json"), status_code=201)
