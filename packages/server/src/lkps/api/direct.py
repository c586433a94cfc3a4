"""A path operation served without FastAPI's router walk and request handler.

`POST /api/livekit/webhook` takes every event of every LiveKit room, thousands a
second. Served by FastAPI, each of them walked every included router before the
lifecycle's (each route matched through FastAPI's included-router bookkeeping, twice),
solved the endpoint's dependencies and validated the answer against its response
model. Measured in-process with the verification stubbed out, the ASGI stack cost
~180 µs per webhook, ~45 µs served directly; under `lkps serve` (2 workers,
bench/webhooks.py --unfollowed) the workers' CPU per event fell from ~0.8 to ~0.48 ms,
together with cheaper request ids and cached metric children.

`DirectRoute` serves the same endpoint function, the one FastAPI documents where its
router is included, from the front of the application's routes: one regular expression
matches the path, the endpoint is called with the request and the services, and its
answer is serialized as FastAPI serializes a response model (the same bytes, status and
headers). Errors are raised, as from any endpoint, to the application's error handlers
(`lkps.api.errors`), and the middlewares see the request as before: `scope["route"]`
names the route for the metrics, other methods get the same 405.

Only an endpoint whose parameters are the request and the services, answering a model
with 200, can be served so: the route refuses to be built for any other, so that an
endpoint that gains a parameter or a dependency cannot silently lose it here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.datastructures import DefaultPlaceholder
from fastapi.routing import APIRoute, APIRouter
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from lkps.api.deps import get_services
from lkps.services import Services

Endpoint = Callable[..., Awaitable[BaseModel]]


class DirectRoute(Route):
    """`operation`'s path and methods, served by calling its endpoint directly."""

    def __init__(self, operation: APIRoute) -> None:
        request_name, services_name = _parameters(operation)
        if not operation.methods:  # FastAPI gives every path operation its methods
            raise TypeError(f"{operation.path}: a direct route needs its methods")
        super().__init__(
            operation.path,
            endpoint=_DirectEndpoint(
                operation.endpoint, operation.response_model, request_name, services_name
            ),
            methods=list(operation.methods),
            name=operation.name,
            include_in_schema=False,  # documented by `operation`, where it is included
        )

    @classmethod
    def of(cls, router: APIRouter, endpoint: Endpoint) -> DirectRoute:
        """The direct route of `endpoint`'s path operation in `router`."""
        for route in router.routes:
            if isinstance(route, APIRoute) and route.endpoint is endpoint:
                return cls(route)
        raise LookupError(f"{endpoint.__name__} is no path operation of this router")

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self  # as FastAPI's routes do: the metrics' route label
        return match, child_scope


class _DirectEndpoint:
    """The ASGI app of a `DirectRoute`: what FastAPI's request handler did for this
    endpoint, without solving anything."""

    def __init__(
        self, endpoint: Endpoint, model: type[BaseModel], request_name: str, services_name: str
    ) -> None:
        self._endpoint = endpoint
        self._serializer = model.__pydantic_serializer__
        self._request_name = request_name
        self._services_name = services_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        services: Services = await get_services(request)
        answer = await self._endpoint(
            **{self._request_name: request, self._services_name: services}
        )
        # What FastAPI answers for a response model under the default response class:
        # the model's JSON from pydantic's serializer, by alias, as application/json.
        body = self._serializer.to_json(answer, by_alias=True)
        await Response(body, media_type="application/json")(scope, receive, send)


def _parameters(operation: APIRoute) -> tuple[str, str]:
    """The names of `operation`'s request and services parameters; `TypeError` for an
    operation that is anything more than those two, answering a model with 200."""
    dependant = operation.dependant
    services = dependant.dependencies
    unserved: list[Any] = [
        dependant.path_params,
        dependant.query_params,
        dependant.header_params,
        dependant.cookie_params,
        dependant.body_params,
        dependant.response_param_name,
        dependant.background_tasks_param_name,
        dependant.security_scopes_param_name,
        dependant.http_connection_param_name,
        dependant.websocket_param_name,
        operation.status_code not in (None, 200),
        not isinstance(operation.response_class, DefaultPlaceholder),
        not _is_model(operation.response_model),
        len(services) != 1 or services[0].call is not get_services or services[0].dependencies,
    ]
    if any(unserved) or dependant.request_param_name is None or services[0].name is None:
        raise TypeError(
            f"{operation.path}: a direct route serves an endpoint of the request and the "
            "services alone, answering a response model with 200"
        )
    return dependant.request_param_name, services[0].name


def _is_model(response_model: Any) -> bool:
    return isinstance(response_model, type) and issubclass(response_model, BaseModel)
