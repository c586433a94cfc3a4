"""Agent registration: `register`, `heartbeat`, `deregister`.

The agent is whoever the token says: its app-only token's client id (`azp`/`appid`)
is the agent id, never anything in the body.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from lkps.agents import Registration
from lkps.api.body import read_json_body
from lkps.api.deps import BearerDoc, RequestContextDep, ServicesDep, authenticate
from lkps.api.openapi import error_responses, json_body
from lkps.api.schemas import (
    AgentRegisterRequest,
    AgentRegisterResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    RegistrationRef,
)
from lkps.audit import AuditEvent, AuditScope, AuditUnavailable
from lkps.errors import Forbidden, ServiceUnavailable
from lkps.limits.limiter import Limit
from lkps.services import Services

router = APIRouter(prefix="/api/agent", tags=["agents"])

APP_TOKEN_REQUIRED = "Agent registration requires an application (client credentials) token"


async def authenticate_agent(
    request: Request, services: Services, audit: AuditScope | None = None
) -> str:
    """The agent id of an app-only caller holding the agent role (when one is set)."""
    caller = await authenticate(request, services, audit)
    if audit is not None:
        audit.set(agent_id=caller.client_app_id)
    if not caller.app_only:
        raise Forbidden(APP_TOKEN_REQUIRED, reason="delegated (user) token on agent endpoint")
    role = services.settings.agent_role
    if role and role not in caller.roles:
        raise Forbidden(
            f"Agent registration requires the app role '{role}'",
            reason=f"agent token lacks app role {role}",
        )
    return caller.client_app_id


@router.post(
    "/register",
    response_model=AgentRegisterResponse,
    dependencies=[BearerDoc],
    openapi_extra=json_body(AgentRegisterRequest, required=False),
    responses=error_responses(400, 401, 403, 413, 415, 429, 500, 503),
)
async def register(
    request: Request, services: ServicesDep, context: RequestContextDep
) -> AgentRegisterResponse:
    """Register one worker process of the calling agent (or renew its registration) and
    issue the LiveKit worker token it connects with."""
    settings = services.settings
    registration: Registration | None = None
    try:
        async with services.audit_scope(AuditEvent.AGENT_REGISTER, context) as audit:
            agent_id = await authenticate_agent(request, services, audit)
            await services.limits.check(Limit.REGISTER_PER_AGENT, agent_id)
            body = await read_json_body(
                request, AgentRegisterRequest, max_bytes=settings.max_body_bytes, required=False
            )
            registration = await services.registry.register(
                agent_id,
                registration_id=str(body.registration_id) if body.registration_id else None,
                enforce_client_authz=body.enforce_client_authz,
                version=body.version,
                metadata=body.metadata,
                worker_connected=body.worker_connected,
            )
            token = services.minter.agent_token(
                agent_name=agent_id, ttl=timedelta(seconds=settings.agent_token_ttl)
            )
            audit.set(registration_id=registration.registration_id)
            audit.detail(
                enforce_client_authz=registration.enforce_client_authz,
                version=body.version,
                token_expires_at=token.expires_at.isoformat(),
                worker_connected=body.worker_connected,
            )
            audit.grant(event=AuditEvent.AGENT_RENEW if registration.renewed else None)
    except AuditUnavailable:
        # No audit record, no token: and no presence either, or clients would be
        # dispatched to a worker that never received its token.
        if registration is not None and not registration.renewed:
            with contextlib.suppress(ServiceUnavailable):
                await services.registry.deregister(
                    registration.agent_id, registration.registration_id, reason="audit_failed"
                )
        raise
    assert registration is not None
    return AgentRegisterResponse(
        agent_name=agent_id,
        livekit_url=settings.livekit_url,
        token=token.jwt,
        expires_at=token.expires_at,
        heartbeat_interval_seconds=settings.heartbeat_interval,
        presence_ttl_seconds=settings.presence_ttl,
        registration_id=registration.registration_id,
    )


@router.post(
    "/heartbeat",
    response_model=HeartbeatResponse,
    dependencies=[BearerDoc],
    openapi_extra=json_body(HeartbeatRequest, required=False),
    responses=error_responses(400, 401, 403, 404, 413, 415, 503),
)
async def heartbeat(request: Request, services: ServicesDep) -> HeartbeatResponse:
    """Keep the agent present. 404 means the registration is gone: register again."""
    agent_id = await authenticate_agent(request, services)
    body = await read_json_body(
        request, HeartbeatRequest, max_bytes=services.settings.max_body_bytes, required=False
    )
    expires_at = await services.registry.heartbeat(
        agent_id,
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
    request: Request, services: ServicesDep, context: RequestContextDep
) -> Response:
    """End one registration, or, without an id, all of the agent's registrations."""
    async with services.audit_scope(
        AuditEvent.AGENT_DEREGISTER, context, granted_status=204
    ) as audit:
        agent_id = await authenticate_agent(request, services, audit)
        body = await read_json_body(
            request, RegistrationRef, max_bytes=services.settings.max_body_bytes, required=False
        )
        registration_id = str(body.registration_id) if body.registration_id else None
        audit.set(registration_id=registration_id)
        ended = await services.registry.deregister(agent_id, registration_id)
        audit.detail(ended_registrations=ended)
    return Response(status_code=204)
