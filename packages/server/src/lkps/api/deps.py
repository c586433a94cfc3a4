"""Dependency aliases for routers: the services, the request's audit context, and the
one thing of the settings a router needs, the body limit (inside `JsonBodies`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import HTTPBearer
from starlette.requests import Request

from lkps.api.body import JsonBodies
from lkps.api.client_address import recorded_client_ip
from lkps.api.middleware import request_id_of
from lkps.audit import AuditScope, RequestContext
from lkps.identity import Caller
from lkps.services import Services

# Documents the bearer scheme in OpenAPI; validation itself happens inside the
# audited block of each endpoint, so that a rejected token is audited too.
bearer_scheme = HTTPBearer(auto_error=False, description="A Microsoft Entra ID access token")
BearerDoc = Security(bearer_scheme)


# `async def`: FastAPI runs a plain `def` dependency in a worker thread, a thread hand-off
# per request on the session-start path for what is a dictionary lookup.
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_bodies(request: Request) -> JsonBodies:
    bodies: JsonBodies = request.app.state.bodies
    return bodies


async def get_request_context(request: Request) -> RequestContext:
    client = request.client
    return RequestContext(
        request_id=request_id_of(request.scope),
        client_ip=recorded_client_ip(client.host) if client else None,
    )


async def authenticate(
    request: Request, services: Services, audit: AuditScope | None = None
) -> Caller:
    """The verified caller, recorded in `audit` when the attempt is audited.

    Called inside each endpoint's audit scope rather than as a dependency, so that a
    rejected token is recorded like any other denial.
    """
    caller = await services.identity.authenticate(request.headers.get("authorization"))
    if audit is not None:
        audit.record_caller(caller)
    return caller


ServicesDep = Annotated[Services, Depends(get_services)]
BodiesDep = Annotated[JsonBodies, Depends(get_bodies)]
RequestContextDep = Annotated[RequestContext, Depends(get_request_context)]
