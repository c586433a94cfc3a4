"""LKPS's one Microsoft Graph read: an agent's pre-authorized client applications.

`GraphClient.pre_authorized_clients(agent)` gets LKPS's app-only token and asks
`GET {graph}/v1.0/applications(appId='{agent}')?$select=api`, then reads
`api.preAuthorizedApplications[].appId`: the list the agent's owner maintains in Entra
("Expose an API" → "Authorized client applications"). It keeps no answers and makes no
retry decisions: caching, backoff and readiness belong to `GraphAuthorizationSource`,
so this module is only about speaking Graph and Entra correctly.

- **Token.** An azure-identity credential (client secret or certificate); it caches and
  renews the token itself. A lock makes concurrent lookups of different agents share
  one token request instead of racing to Entra. The scope is the Graph resource's
  `/.default`: the national cloud's Graph for its known hosts, else
  `https://graph.microsoft.com/.default` (a proxy or a local Graph double is still sent
  a token for Graph itself).
- **Answers.** 200 with Graph's shape: the client ids. 404 `Request_ResourceNotFound`:
  `None` (no such app registration, a real answer). Anything else raises a
  `GraphLookupFailed` saying why: `GraphThrottled` for 429 (with the wait its
  `Retry-After` asks for), `GraphAccessRefused` when Entra refuses LKPS's credentials
  or Graph refuses its token (LKPS's configuration is wrong, not Graph's health).
  A 404 without Graph's OData error (a wrong `graph_url`, a proxy) is a failure.
- **No token or secret is logged**: reasons carry Graph's status, OData code and
  `request-id`, and Entra's `AADSTS` code.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from azure.core.credentials import AccessToken
from azure.core.exceptions import AzureError, ClientAuthenticationError

from lkps.clock import Clock
from lkps.metrics import GRAPH_REQUESTS

log = logging.getLogger(__name__)

GRAPH_URL = "https://graph.microsoft.com"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
DEFAULT_RETRY_AFTER = 10.0
MAX_RETRY_AFTER = 300.0
# Microsoft Graph in the public and national clouds: their own resource for the scope.
GRAPH_HOSTS = frozenset(
    {
        "graph.microsoft.com",
        "graph.microsoft.us",
        "dod-graph.microsoft.us",
        "microsoftgraph.chinacloudapi.cn",
    }
)
_AADSTS = re.compile(r"AADSTS\d+")


def graph_scope_for(graph_url: str) -> str:
    """The `.default` scope for the Graph at `graph_url` (see the module docstring)."""
    parts = urlsplit(graph_url)
    if parts.scheme == "https" and (parts.hostname or "").lower() in GRAPH_HOSTS:
        return f"https://{parts.hostname}/.default".lower()
    return GRAPH_SCOPE


class GraphCredential(Protocol):
    """What the client needs of an azure-identity async credential."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken: ...

    async def close(self) -> None: ...


class GraphLookupFailed(Exception):
    """Graph gave no usable answer; `reason` says why, fit for logs and audit records."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class GraphThrottled(GraphLookupFailed):
    """Graph answered 429: no Graph request should be made for `wait` seconds."""

    def __init__(self, reason: str, wait: float) -> None:
        super().__init__(reason)
        self.wait = wait


class GraphAccessRefused(GraphLookupFailed):
    """LKPS's own access is wrong: Entra refused its credentials (`by_graph` False) or
    Graph refused its token (`by_graph` True, so re-checking it needs a Graph read)."""

    def __init__(self, reason: str, *, by_graph: bool) -> None:
        super().__init__(reason)
        self.by_graph = by_graph


class MalformedGraphResponse(ValueError):
    pass


def parse_pre_authorized_applications(document: object) -> frozenset[str]:
    """Lower-case client app ids of an application's `api.preAuthorizedApplications`.

    Raises `MalformedGraphResponse` for anything that is not the shape Graph returns.
    """
    if not isinstance(document, Mapping) or "api" not in document:
        raise MalformedGraphResponse("no 'api' property")
    api = document["api"]
    if api is None:
        return frozenset()
    if not isinstance(api, Mapping):
        raise MalformedGraphResponse("'api' is not an object")
    applications = api.get("preAuthorizedApplications")
    if applications is None:
        return frozenset()
    if not isinstance(applications, list):
        raise MalformedGraphResponse("'api.preAuthorizedApplications' is not a list")
    clients: set[str] = set()
    for application in applications:
        app_id = application.get("appId") if isinstance(application, Mapping) else None
        if not isinstance(app_id, str) or not app_id.strip():
            raise MalformedGraphResponse("a pre-authorized application has no 'appId'")
        clients.add(app_id.strip().lower())
    return frozenset(clients)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` value (delta-seconds or an HTTP-date)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - now).total_seconds())
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN, infinities
        return None
    return max(0.0, seconds)


def _outcome_of(status: int) -> str:
    """A bounded label for a Graph answer, for metrics."""
    return {200: "ok", 404: "not_found", 429: "throttled", 401: "refused", 403: "refused"}.get(
        status, "error"
    )


def _odata_error_code(response: httpx.Response) -> str | None:
    try:
        body: Any = response.json()
    except ValueError:
        return None
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        code = body["error"].get("code")
        return code if isinstance(code, str) else None
    return None


class GraphClient:
    """Reads an agent's pre-authorized clients from Graph (see the module docstring).

    Owns the credential (`aclose()` closes it) but not the `httpx.AsyncClient`. The clock
    is only for an HTTP-date `Retry-After`. `requests` and `throttled` count Graph
    requests sent and 429s received, for tests and diagnostics.
    """

    def __init__(
        self,
        credential: GraphCredential,
        http: httpx.AsyncClient,
        clock: Clock,
        *,
        graph_url: str = GRAPH_URL,
        scope: str = GRAPH_SCOPE,
        timeout: float = 10.0,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._credential = credential
        self._http = http
        self._clock = clock
        self._url = graph_url.rstrip("/")
        self._scope = scope
        self._timeout = timeout
        self._token_lock = asyncio.Lock()
        self.requests = 0
        self.throttled = 0

    async def aclose(self) -> None:
        await self._credential.close()

    async def access_token(self) -> str:
        """LKPS's Graph token; raises `GraphLookupFailed` (`GraphAccessRefused` when Entra
        refuses LKPS's credentials)."""
        try:
            async with asyncio.timeout(self._timeout), self._token_lock:
                token = await self._credential.get_token(self._scope)
        except TimeoutError:
            raise GraphLookupFailed(
                f"no Graph token: Entra did not answer within {self._timeout:g}s"
            ) from None
        except ClientAuthenticationError as exc:
            code = _AADSTS.search(str(exc.message or ""))
            detail = code.group(0) if code else type(exc).__name__
            reason = f"no Graph token: Entra refused LKPS's credentials ({detail})"
            if exc.status_code in (400, 401):
                raise GraphAccessRefused(reason, by_graph=False) from None
            raise GraphLookupFailed(reason) from None
        except (AzureError, OSError, ValueError) as exc:
            raise GraphLookupFailed(f"no Graph token: {type(exc).__name__}") from None
        return token.token

    async def pre_authorized_clients(self, agent: str) -> frozenset[str] | None:
        """The agent's pre-authorized client ids; `None` when Graph has no such app
        registration. `agent` must be a canonical app id (a UUID): it goes into the URL."""
        token = await self.access_token()
        response, request_id = await self._get_application(agent, token)
        status = response.status_code
        if status == 200:
            try:
                clients = parse_pre_authorized_applications(response.json())
            except (ValueError, MalformedGraphResponse) as exc:
                raise GraphLookupFailed(
                    f"Graph answered 200 with an unusable body ({exc}; request-id {request_id})"
                ) from None
            log.debug(
                "%d pre-authorized clients read from Graph for agent %s",
                len(clients),
                agent,
                extra={"agent_id": agent, "clients": len(clients), "graph_request_id": request_id},
            )
            return clients
        code = _odata_error_code(response) or "no OData error"
        where = f"{status} {code}; request-id {request_id}"
        if status == 404 and code == "Request_ResourceNotFound":
            log.info(
                "agent %s has no app registration in Graph; its clients will be denied",
                agent,
                extra={"agent_id": agent, "graph_request_id": request_id},
            )
            return None
        if status == 429:
            raise GraphThrottled(f"Graph throttled LKPS ({where})", self._throttle_wait(response))
        if status in (401, 403):
            raise GraphAccessRefused(
                f"Graph refused LKPS's token ({where}); LKPS needs the Application.Read.All "
                "application permission with admin consent",
                by_graph=True,
            )
        raise GraphLookupFailed(f"Graph answered {where}")

    async def _get_application(self, agent: str, token: str) -> tuple[httpx.Response, str]:
        """Graph's response to the application read, and its `request-id` (ours when
        Graph sent none)."""
        url = f"{self._url}/v1.0/applications(appId='{agent}')"
        client_request_id = str(uuid.uuid4())
        self.requests += 1
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._http.get(
                    url,
                    params={"$select": "api"},
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Accept": "application/json",
                        "client-request-id": client_request_id,
                    },
                    timeout=self._timeout,
                )
        except (TimeoutError, httpx.TimeoutException):
            GRAPH_REQUESTS.labels("timeout").inc()
            raise GraphLookupFailed(f"Graph did not answer within {self._timeout:g}s") from None
        except httpx.HTTPError as exc:
            GRAPH_REQUESTS.labels("error").inc()
            raise GraphLookupFailed(f"Graph request failed: {type(exc).__name__}") from None
        GRAPH_REQUESTS.labels(_outcome_of(response.status_code)).inc()
        return response, response.headers.get("request-id", client_request_id)

    def _throttle_wait(self, response: httpx.Response) -> float:
        """Seconds a 429 asks for: its `Retry-After` (seconds or an HTTP-date), 10 s when
        absent or unparseable, at most 300 s."""
        self.throttled += 1
        wait = parse_retry_after(response.headers.get("Retry-After"), self._clock.now())
        return min(DEFAULT_RETRY_AFTER if wait is None else wait, MAX_RETRY_AFTER)
