"""A Microsoft Graph v1.0 double for the one read LKPS makes: an application's `api`.

`GET /v1.0/applications(appId='{appId}')?$select=api` (and `/v1.0/applications/{id}`
by object id) answers like Graph does, with Graph's OData bodies and headers:

- the caller needs an app-only bearer token signed by the given `EntraDouble` for
  Graph (RS256, `aud` https://graph.microsoft.com or Graph's app id, `tid` the double's
  tenant), else 401 `InvalidAuthenticationToken`; and an application-read app role in
  `roles` (`Application.Read.All` or a broader one), else 403 `Authorization_RequestDenied`;
- registered applications (`applications`: appId → pre-authorized client ids, mutable
  by tests) get `api.preAuthorizedApplications`; any other appId gets Graph's 404
  `Request_ResourceNotFound`;
- switches for what a test needs to provoke: `throttle()` (429 `TooManyRequests` with
  `Retry-After`), `available = False` (503 `ServiceUnavailable`), `delay` (a slow Graph),
  `hold()`/`release()` (a Graph that has not answered yet, for as long as the test says);
- counters: `requests` (every request received, whatever its answer) and
  `requests_by_app` (per appId), so tests can assert how many Graph calls were made.

The server runs in its own thread (`ServerThread`); tests flip the switches from theirs.
"""

from __future__ import annotations

import asyncio
import re
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lkps_testkit.entra import GRAPH_APP_ID, GRAPH_RESOURCE, EntraDouble, stable_uuid

GRAPH_METADATA = "https://graph.microsoft.com/v1.0/$metadata"
# App roles that let an application read app registrations (the least privileged first).
APPLICATION_READ_ROLES = frozenset(
    {
        "Application.Read.All",
        "Application.ReadWrite.All",
        "Directory.Read.All",
        "Directory.ReadWrite.All",
    }
)
_ODATA_JSON = (
    "application/json;odata.metadata=minimal;odata.streaming=true;"
    "IEEE754Compatible=false;charset=utf-8"
)
_BY_APP_ID = re.compile(r"^applications\(appId='(?P<app_id>[^']*)'\)$")
_BY_OBJECT_ID = re.compile(r"^applications/(?P<object_id>[^/]+)$")


def _set_event() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


@dataclass
class GraphDouble:
    entra: EntraDouble
    # appId -> client app ids pre-authorized on that app registration (tests mutate it).
    applications: dict[str, list[str]] = field(default_factory=dict)
    accepted_roles: frozenset[str] = APPLICATION_READ_ROLES
    # Seconds every response waits before it is sent (a slow Graph).
    delay: float = 0.0
    # False: every request gets 503 ServiceUnavailable.
    available: bool = True
    requests: int = 0
    requests_by_app: Counter[str] = field(default_factory=Counter)
    throttled_responses: int = 0
    # Set while requests may be answered (see hold()).
    _answering: threading.Event = field(default_factory=_set_event)
    _throttle_times: int = 0
    _throttle_retry_after: str = "0"

    def throttle(self, retry_after: int | str = 2, *, times: int = 1) -> None:
        """Answer the next `times` requests with 429 and `Retry-After: <retry_after>`
        (seconds, or an HTTP-date string)."""
        self._throttle_retry_after = str(retry_after)
        self._throttle_times = times

    def hold(self) -> None:
        """Leave every request unanswered (received and counted) until `release()`: a slow
        Graph whose slowness does not depend on how fast the machine runs the test."""
        self._answering.clear()

    def release(self) -> None:
        """Answer the held requests, and the next ones at once."""
        self._answering.set()

    def reset(self) -> None:
        """Back to a healthy, empty Graph with zeroed counters (held requests answered)."""
        self.release()
        self.applications.clear()
        self.delay = 0.0
        self.available = True
        self.requests = 0
        self.requests_by_app.clear()
        self.throttled_responses = 0
        self._throttle_times = 0

    def object_id(self, app_id: str) -> str:
        """The application object's `id` (not its appId), stable per tenant and app."""
        return stable_uuid(self.entra.tenant_id, "application", app_id.lower())

    def application(self, app_id: str) -> dict[str, Any] | None:
        """The application resource as Graph returns it without `$select`."""
        clients = {k.lower(): v for k, v in self.applications.items()}.get(app_id.lower())
        if clients is None:
            return None
        scope_id = stable_uuid(self.entra.tenant_id, "scope", app_id.lower())
        return {
            "id": self.object_id(app_id),
            "appId": app_id.lower(),
            "displayName": f"agent {app_id.lower()}",
            "identifierUris": [f"api://{app_id.lower()}"],
            "signInAudience": "AzureADMyOrg",
            "api": {
                "acceptMappedClaims": None,
                "knownClientApplications": [],
                "requestedAccessTokenVersion": 2,
                "oauth2PermissionScopes": [
                    {
                        "adminConsentDescription": "Start sessions with this agent",
                        "adminConsentDisplayName": "Access the agent",
                        "id": scope_id,
                        "isEnabled": True,
                        "type": "User",
                        "userConsentDescription": "Start sessions with this agent",
                        "userConsentDisplayName": "Access the agent",
                        "value": "access_as_user",
                    }
                ],
                "preAuthorizedApplications": [
                    {"appId": client, "delegatedPermissionIds": [scope_id]} for client in clients
                ],
            },
        }

    # HTTP.

    def asgi_app(self) -> Starlette:
        return Starlette(routes=[Route("/v1.0/{rest:path}", self._v1_endpoint, methods=["GET"])])

    async def _v1_endpoint(self, request: Request) -> JSONResponse:
        self.requests += 1
        segment = request.path_params["rest"]
        by_app_id = _BY_APP_ID.match(segment)
        by_object_id = _BY_OBJECT_ID.match(segment)
        app_id: str | None = None
        if by_app_id:
            app_id = by_app_id["app_id"].lower()
        elif by_object_id:
            wanted = by_object_id["object_id"].lower()
            app_id = next((a for a in self.applications if self.object_id(a) == wanted), wanted)
        if app_id is not None:
            self.requests_by_app[app_id] += 1
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        if not self._answering.is_set():
            await asyncio.to_thread(self._answering.wait)

        if not self.available:
            return _odata_error(
                request, 503, "ServiceUnavailable", "Service is temporarily unavailable."
            )
        if self._throttle_times > 0:
            self._throttle_times -= 1
            self.throttled_responses += 1
            return _odata_error(
                request,
                429,
                "TooManyRequests",
                "Too many requests. Please retry after the time given in Retry-After.",
                headers={"Retry-After": self._throttle_retry_after},
            )
        denied = self._check_token(request)
        if denied is not None:
            return denied
        if app_id is None:
            return _odata_error(
                request, 400, "BadRequest", f"Resource not found for the segment '{segment}'."
            )

        application = self.application(app_id)
        if application is None:
            return _odata_error(
                request,
                404,
                "Request_ResourceNotFound",
                f"Resource '{app_id}' does not exist or one of its queried "
                "reference-property objects are not present.",
            )
        select = [p.strip() for p in request.query_params.get("$select", "").split(",") if p]
        unknown = [p for p in select if p not in application]
        if unknown:
            return _odata_error(
                request,
                400,
                "BadRequest",
                f"Could not find a property named '{unknown[0]}' on type "
                "'microsoft.graph.application'.",
            )
        if select:
            body = {
                "@odata.context": f"{GRAPH_METADATA}#applications({','.join(select)})/$entity",
                **{p: application[p] for p in select},
            }
        else:
            body = {"@odata.context": f"{GRAPH_METADATA}#applications/$entity", **application}
        return JSONResponse(body, headers=_graph_headers(request), media_type=_ODATA_JSON)

    def _check_token(self, request: Request) -> JSONResponse | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _unauthenticated(request, "Access token is empty.")
        try:
            header = jwt.get_unverified_header(token)
            key = next((k for k in self.entra.keys if k.kid == header.get("kid")), None)
            if key is None:
                return _unauthenticated(request, "Access token validation failure.")
            claims = jwt.decode(
                token,
                key.private_key.public_key(),
                algorithms=["RS256"],
                audience=[GRAPH_RESOURCE, f"{GRAPH_RESOURCE}/", GRAPH_APP_ID],
                issuer=[self.entra.issuer_v1, self.entra.issuer_v2],
                options={"require": ["exp", "aud", "iss", "tid"]},
            )
        except jwt.ExpiredSignatureError:
            return _unauthenticated(request, "Lifetime validation failed, the token is expired.")
        except jwt.InvalidAudienceError:
            return _unauthenticated(request, "Access token validation failure. Invalid audience.")
        except jwt.PyJWTError:
            return _unauthenticated(request, "Access token validation failure.")
        if claims.get("tid") != self.entra.tenant_id:
            return _unauthenticated(request, "Access token validation failure. Invalid tenant.")
        roles = claims.get("roles")
        if not isinstance(roles, list) or not self.accepted_roles.intersection(map(str, roles)):
            return _odata_error(
                request,
                403,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            )
        return None


def _graph_headers(request: Request) -> dict[str, str]:
    request_id = str(uuid.uuid4())
    return {
        "request-id": request_id,
        "client-request-id": request.headers.get("client-request-id", request_id),
        "OData-Version": "4.0",
        "x-ms-ags-diagnostic": '{"ServerInfo":{"DataCenter":"Local","Slice":"E"}}',
    }


def _odata_error(
    request: Request,
    status: int,
    code: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    graph_headers = _graph_headers(request)
    body = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": graph_headers["request-id"],
                "client-request-id": graph_headers["client-request-id"],
            },
        }
    }
    return JSONResponse(
        body,
        status_code=status,
        headers={**graph_headers, **(headers or {})},
        media_type="application/json",
    )


def _unauthenticated(request: Request, message: str) -> JSONResponse:
    return _odata_error(
        request,
        401,
        "InvalidAuthenticationToken",
        message,
        headers={
            "WWW-Authenticate": (
                'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/'
                f'oauth2/authorize", client_id="{GRAPH_APP_ID}"'
            )
        },
    )
