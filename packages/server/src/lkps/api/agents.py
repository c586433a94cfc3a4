"""Agent registration: `register`, `heartbeat`, `deregister` (see `lkps.agents.service`)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from lkps.agents import RegistrationRequest
from lkps.api.deps import BearerDoc, BodiesDep, RequestContextDep, ServicesDep, authenticate
from lkps.api.openapi import error_responses, json_body
from lkps.api.schemas import (
    AgentRegisterRequest,
    AgentRegisterResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    RegistrationRef,
)
from lkps.audit import AuditEvent
from lkps.gateway import gateway_url_for

router = APIRouter(prefix="/api/agent", tags=["agents"])


@router.post(
    "/register",
    response_model=AgentRegisterResponse,
    # Direct mode answers exactly as before the gateway existed.
    response_model_exclude_none=True,
    dependencies=[BearerDoc],
    openapi_extra=json_body(AgentRegisterRequest, required=False),
    responses=error_responses(400, 401, 403, 413, 415, 429, 500, 503),
)
async def register(
    request: Request, services: ServicesDep, bodies: BodiesDep, context: RequestContextDep
) -> AgentRegisterResponse:
    """Register one worker process of the calling agent (or renew its registration) and
    issue the credential its worker connects with: a gateway credential and the gateway's
    URL (LKPS_AGENT_CONNECTION=gateway), or a LiveKit worker token (direct)."""
    async with services.audit_scope(AuditEvent.AGENT_REGISTER, context) as audit:
        agent = services.agents.identify(await authenticate(request, services, audit), audit)
        body = await bodies.read(request, AgentRegisterRequest, required=False)
        grant = await services.agents.register(
            agent,
            RegistrationRequest(
                registration_id=str(body.registration_id) if body.registration_id else None,
                enforce_client_authz=body.enforce_client_authz,
                version=body.version,
                metadata=body.metadata,
                worker_connected=body.worker_connected,
            ),
            audit,
        )
    terms = grant.terms
    gateway = terms.agent_connection == "gateway"
    return AgentRegisterResponse(
        agent_name=grant.agent_id,
        livekit_url=terms.livekit_url,
        token=grant.token.jwt,
        expires_at=grant.token.expires_at,
        heartbeat_interval_seconds=terms.heartbeat_interval,
        presence_ttl_seconds=terms.presence_ttl,
        registration_id=grant.registration_id,
        agent_connection="gateway" if gateway else None,
        gateway_url=(terms.gateway_url or gateway_url_for(request.url.scheme, request.url.netloc))
        if gateway
        else None,
    )


@router.post(
    "/heartbeat",
    response_model=HeartbeatResponse,
    dependencies=[BearerDoc],
    openapi_extra=json_body(HeartbeatRequest, required=False),
    responses=error_responses(400, 401, 403, 404, 413, 415, 503),
)
async def heartbeat(
    request: Request, services: ServicesDep, bodies: BodiesDep
) -> HeartbeatResponse:
    """Keep the agent present. 404 means the registration is gone: register again."""
    agent = services.agents.identify(await authenticate(request, services))
    body = await bodies.read(request, HeartbeatRequest, required=False)
    expires_at = await services.agents.heartbeat(
        agent,
        str(body.registration_id) if body.registration_id else None,
        worker_connected=body.worker_connected,
    )
    return HeartbeatResponse(connected=True, presence_expires_at=expires_at)


@router.post(
    "/deregister",
    status_code=204,
    response_class=Response,
    dependencies=[BearerDoc],
    openapi_extra=json_body(RegistrationRef, required=False),
    responses=error_responses(400, 401, 403, 413, 415, 500, 503),
)
async def deregister(
    request: Request, services: ServicesDep, bodies: BodiesDep, context: RequestContextDep
) -> Response:
    """End one registration, or, without an id, all of the agent's registrations."""
    async with services.audit_scope(
        AuditEvent.AGENT_DEREGISTER, context, granted_status=204
    ) as audit:
        agent = services.agents.identify(await authenticate(request, services, audit), audit)
        body = await bodies.read(request, RegistrationRef, required=False)
        registration_id = str(body.registration_id) if body.registration_id else None
        await services.agents.deregister(agent, registration_id, audit)
    return Response(status_code=204)
