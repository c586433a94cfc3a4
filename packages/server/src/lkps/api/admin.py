"""Operators: the agents LKPS knows, and per-agent authorization overrides.

Reading the agent list takes `LKPS.Admin` or `LKPS.Auditor`; changing an override takes
`LKPS.Admin`, and every change is audited with who made it and what it replaced.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from lkps.agents import AgentOverview
from lkps.agents.presence import takes_jobs
from lkps.api.deps import BearerDoc, BodiesDep, RequestContextDep, ServicesDep, authenticate
from lkps.api.openapi import error_responses, json_body
from lkps.api.schemas import (
    AgentId,
    AgentInfo,
    AgentList,
    ConnectedWorkerInfo,
    OverrideBody,
    OverrideResponse,
)
from lkps.audit import AuditEvent
from lkps.authorization.override import AuthorizationOverride

router = APIRouter(prefix="/api/agents", tags=["administration"])


def _override_response(override: AuthorizationOverride) -> OverrideResponse:
    return OverrideResponse(
        agent_id=override.agent_id,
        enforce_client_authz=override.enforce_client_authz,
        additional_clients=list(override.additional_clients),
        updated_at=override.updated_at,
        updated_by=override.updated_by,
    )


def _agent_info(agent: AgentOverview, target_load: float) -> AgentInfo:
    summary = agent.summary
    return AgentInfo(
        agent_id=summary.agent_id,
        present=agent.present,
        enforce_client_authz=agent.enforce_client_authz,
        registered_enforce_client_authz=summary.enforce_client_authz,
        override=_override_response(agent.override) if agent.override else None,
        version=summary.version,
        first_registered_at=summary.first_registered_at,
        last_registered_at=summary.last_registered_at,
        last_heartbeat_at=summary.last_heartbeat_at,
        active_registrations=summary.active_registrations,
        connected_registrations=summary.connected_registrations,
        workers=[
            ConnectedWorkerInfo(
                replica_id=worker.replica_id,
                worker_id=worker.worker_id,
                registration_id=worker.registration_id,
                connected_at=worker.connected_at,
                registered=worker.registered,
                status=(
                    "available"
                    if takes_jobs(worker.available, worker.load, target_load)
                    else "full"
                ),
                load=worker.load,
                job_count=worker.job_count,
                updated_at=worker.updated_at,
            )
            for worker in agent.workers
        ],
    )


@router.get(
    "",
    response_model=AgentList,
    dependencies=[BearerDoc],
    responses=error_responses(401, 403, 503),
)
async def list_agents(request: Request, services: ServicesDep) -> AgentList:
    """Every agent that ever registered: presence, effective enforcement, overrides."""
    caller = await authenticate(request, services)
    agents = await services.agents.overview(caller)
    target_load = services.agents.target_load
    return AgentList(agents=[_agent_info(agent, target_load) for agent in agents])


@router.get(
    "/{agent_id}/authorization",
    response_model=OverrideResponse,
    dependencies=[BearerDoc],
    responses=error_responses(400, 401, 403, 404, 503),
)
async def get_override(
    agent_id: AgentId, request: Request, services: ServicesDep
) -> OverrideResponse:
    """The operator override of an agent's client authorization; 404 when there is none."""
    caller = await authenticate(request, services)
    override = await services.authorization.read_override(caller, str(agent_id))
    return _override_response(override)


@router.put(
    "/{agent_id}/authorization",
    response_model=OverrideResponse,
    dependencies=[BearerDoc],
    openapi_extra=json_body(OverrideBody),
    responses=error_responses(400, 401, 403, 413, 415, 500, 503),
)
async def set_override(
    agent_id: AgentId,
    request: Request,
    services: ServicesDep,
    bodies: BodiesDep,
    context: RequestContextDep,
) -> OverrideResponse:
    """Force enforcement on or off, and/or allow further client apps, for one agent."""
    async with services.audit_scope(AuditEvent.AUTHZ_OVERRIDE_SET, context) as audit:
        caller = await authenticate(request, services, audit)
        right = services.authorization.may_change(caller, str(agent_id), audit)
        body = await bodies.read(request, OverrideBody)
        override = await services.authorization.set_override(
            right,
            audit,
            enforce_client_authz=body.enforce_client_authz,
            additional_clients=body.additional_clients,
        )
    return _override_response(override)


@router.delete(
    "/{agent_id}/authorization",
    status_code=204,
    response_class=Response,
    dependencies=[BearerDoc],
    responses=error_responses(400, 401, 403, 500, 503),
)
async def clear_override(
    agent_id: AgentId, request: Request, services: ServicesDep, context: RequestContextDep
) -> Response:
    """Remove the override: the agent's registration and the source decide again."""
    async with services.audit_scope(
        AuditEvent.AUTHZ_OVERRIDE_CLEAR, context, granted_status=204
    ) as audit:
        caller = await authenticate(request, services, audit)
        right = services.authorization.may_change(caller, str(agent_id), audit)
        await services.authorization.clear_override(right, audit)
    return Response(status_code=204)
