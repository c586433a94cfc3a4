"""`POST /api/session/start`."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request

from lkps.api.body import read_json_body
from lkps.api.deps import BearerDoc, RequestContextDep, ServicesDep, authenticate
from lkps.api.openapi import error_responses, json_body
from lkps.api.schemas import SessionStartRequest, SessionStartResponse
from lkps.audit import AuditEvent
from lkps.sessions.metadata import dispatch_metadata

router = APIRouter(prefix="/api/session", tags=["sessions"])

SESSION_FAILED = "Session creation failed"


@router.post(
    "/start",
    response_model=SessionStartResponse,
    dependencies=[BearerDoc],
    openapi_extra=json_body(SessionStartRequest),
    responses=error_responses(400, 401, 403, 404, 413, 415, 500, 503),
)
async def start_session(
    request: Request, services: ServicesDep, context: RequestContextDep
) -> SessionStartResponse:
    """Start a session with an agent: a new room, and a participant token whose room
    configuration makes LiveKit dispatch the agent into it."""
    async with services.audit_scope(
        AuditEvent.SESSION_START, context, failure_message=SESSION_FAILED
    ) as audit:
        caller = await authenticate(request, services, audit)
        body = await read_json_body(
            request, SessionStartRequest, max_bytes=services.settings.max_body_bytes
        )
        audit.set(agent_id=str(body.agent_entra_app_id))
        session = await services.sessions.start(caller, body.agent_entra_app_id, body.metadata)
        audit.set(room_name=session.room_name)
        audit.detail(
            session_id=session.session_id,
            token_expires_at=session.participant_token.expires_at.isoformat(),
            metadata_bytes=len(dispatch_metadata(body.metadata).encode()),
        )
        audit.grant(reason=session.authorization_reason)
    return SessionStartResponse(
        room_name=session.room_name,
        livekit_url=session.livekit_url,
        participant_token=session.participant_token.jwt,
        session_id=session.session_id,
        expires_at=session.participant_token.expires_at,
    )
