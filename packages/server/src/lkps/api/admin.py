"""Operators: the agents LKPS knows, and per-agent authorization overrides.

Reading the agent list takes `LKPS.Admin` or `LKPS.Auditor`; changing an override takes
`LKPS.Admin`, and every change is audited with who made it and what it replaced.
"""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from lkps.api.body import read_json_body
from lkps.api.deps import BearerDoc, RequestContextDep, ServicesDep, authenticate, require_role
from lkps.api.openapi import error_responses, json_body
from lkps.api.schemas import AgentId, AgentInfo, AgentList, OverrideBody, OverrideResponse
from lkps.audit import AuditEvent
from lkps.errors import NotFound
from lkps.store.overrides import StoredOverride

router = APIRouter(prefix="/api/agents", tags=["administration"])


def _override_response(override: StoredOverride) -> OverrideResponse:
    return OverrideResponse(
        agent_id=override.agent_id,
        enforce_client_authz=override.enforce_client_authz,
        additional_clients=list(override.additional_clients),
        updated_at=override.updated_at,
        updated_by=override.updated_by,
    )


def _snapshot(override: StoredOverride | None) -> dict[str, object] | None:
    if override is None:
        return None
    document = asdict(override)
    document["updated_at"] = override.updated_at.isoformat()
    document["additional_clients"] = list(override.additional_clients)
    return document


@router.get(
    "",
    response_model=AgentList,
    dependencies=[BearerDoc],
    responses=error_responses(401, 403, 503),
)
async def list_agents(request: Request, services: ServicesDep) -> AgentList:
    """Every agent that ever registered: presence, effective enforcement, overrides."""
    caller = await authenticate(request, services)
    settings = services.settings
    require_role(caller, settings.admin_role, settings.auditor_role)
    summaries = await services.registry.summaries()
    overrides = await services.overrides.all()
    agents = []
    for summary in summaries:
        override = overrides.get(summary.agent_id)
        forced = override.enforce_client_authz if override else None
        agents.append(
            AgentInfo(
                agent_id=summary.agent_id,
                present=summary.connected_registrations > 0,
                enforce_client_authz=summary.enforce_client_authz if forced is None else forced,
                registered_enforce_client_authz=summary.enforce_client_authz,
                override=_override_response(override) if override else None,
                version=summary.version,
                first_registered_at=summary.first_registered_at,
                last_registered_at=summary.last_registered_at,
                last_heartbeat_at=summary.last_heartbeat_at,
                active_registrations=summary.active_registrations,
                connected_registrations=summary.connected_registrations,
            )
        )
    return AgentList(agents=agents)


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
    require_role(caller, services.settings.admin_role, services.settings.auditor_role)
    override = await services.overrides.get(str(agent_id))
    if override is None:
        raise NotFound(f"Agent '{agent_id}' has no authorization override")
    return _override_response(override)


@router.put(
    "/{agent_id}/authorization",
    response_model=OverrideResponse,
    dependencies=[BearerDoc],
    openapi_extra=json_body(OverrideBody),
    responses=error_responses(400, 401, 403, 413, 415, 500, 503),
)
async def set_override(
    agent_id: AgentId, request: Request, services: ServicesDep, context: RequestContextDep
) -> OverrideResponse:
    """Force enforcement on or off, and/or allow further client apps, for one agent."""
    async with services.audit_scope(AuditEvent.AUTHZ_OVERRIDE_SET, context) as audit:
        caller = await authenticate(request, services, audit)
        audit.set(agent_id=str(agent_id))
        require_role(caller, services.settings.admin_role)
        body = await read_json_body(
            request, OverrideBody, max_bytes=services.settings.max_body_bytes
        )
        change = await services.overrides.set(
            str(agent_id),
            enforce_client_authz=body.enforce_client_authz,
            additional_clients=body.additional_clients,
            updated_by=f"{caller.cwid} ({caller.subject_key})",
        )
        audit.detail(before=_snapshot(change.before), after=_snapshot(change.after))
    assert change.after is not None
    return _override_response(change.after)


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
        audit.set(agent_id=str(agent_id))
        require_role(caller, services.settings.admin_role)
        change = await services.overrides.clear(str(agent_id))
        audit.detail(before=_snapshot(change.before))
    return Response(status_code=204)
