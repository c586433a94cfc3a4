"""Session start: `POST /api/session/start` (LKPS's own body) and
`POST /api/session/token` (LiveKit's standardized token-endpoint body, so LiveKit client
SDKs' endpoint `TokenSource` works against LKPS with just an `Authorization` header).

Both run the same audited flow; only how the request is read differs.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from google.protobuf.json_format import ParseDict, ParseError
from livekit.protocol.room import RoomConfiguration
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
from lkps.errors import BadRequest
from lkps.limits.limiter import Limit
from lkps.services import Services
from lkps.sessions import StartedSession
from lkps.sessions.metadata import check_metadata, dispatch_metadata

router = APIRouter(prefix="/api/session", tags=["sessions"])

SESSION_FAILED = "Session creation failed"


@dataclass(frozen=True, slots=True)
class WantedSession:
    agent_id: uuid.UUID
    metadata: dict[str, Any] | None


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
        request, SessionStartRequest, max_bytes=services.settings.max_body_bytes
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

_CHOSEN_BY_LKPS = ("room_name", "participant_identity", "participant_name", "participant_metadata")
_AGENTS = "room_config.agents"


async def read_token_request(request: Request, services: Services) -> WantedSession:
    body = await read_json_body(
        request, TokenSourceRequest, max_bytes=services.settings.max_body_bytes, required=False
    )
    for field in _CHOSEN_BY_LKPS:
        if getattr(body, field):
            raise BadRequest(f'"{field}" is chosen by LKPS and cannot be requested')
    if body.participant_attributes:
        raise BadRequest('"participant_attributes" cannot be requested')
    config = _room_config(body.room_config)
    unexpected = [f.name for f, _ in config.ListFields() if f.name != "agents"]
    if unexpected:
        raise BadRequest(f'"room_config.{unexpected[0]}" is chosen by LKPS and cannot be requested')
    if len(config.agents) != 1:
        raise BadRequest(f'"{_AGENTS}" must name exactly one agent')
    dispatch = config.agents[0]
    unexpected = [
        f.name for f, _ in dispatch.ListFields() if f.name not in {"agent_name", "metadata"}
    ]
    if unexpected:
        raise BadRequest(f'"{_AGENTS}[0].{unexpected[0]}" cannot be requested')
    if not dispatch.agent_name:
        raise BadRequest(f'"{_AGENTS}[0].agent_name" is required')
    try:
        agent_id = uuid.UUID(dispatch.agent_name)
    except ValueError:
        raise BadRequest(
            f'"{_AGENTS}[0].agent_name" must be the agent\'s app id (a UUID)'
        ) from None
    return WantedSession(agent_id, _dispatch_metadata(dispatch.metadata))


def _room_config(document: dict[str, Any] | None) -> RoomConfiguration:
    if document is None:
        raise BadRequest(f'"{_AGENTS}[0].agent_name" is required')
    try:
        return ParseDict(document, RoomConfiguration())
    except (ParseError, TypeError, ValueError) as exc:
        raise BadRequest(f'"room_config" is not a LiveKit room configuration: {exc}') from None


def _dispatch_metadata(text: str) -> dict[str, Any] | None:
    """The agent metadata as a JSON object within the session-start limits."""
    if not text:
        return None
    field = f"{_AGENTS}[0].metadata"
    try:
        metadata = json.loads(text)
    except (ValueError, RecursionError):
        raise BadRequest(f'"{field}" must be a JSON object, as a string') from None
    if not isinstance(metadata, dict):
        raise BadRequest(f'"{field}" must be a JSON object, as a string')
    try:
        return check_metadata(metadata, field=field)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


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
