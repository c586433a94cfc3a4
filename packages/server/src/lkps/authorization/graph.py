"""Pre-authorized clients read from the agent's app registration in Microsoft Graph.

LKPS asks Graph, with its own app-only token, for
`GET {graph}/v1.0/applications(appId='{agent id}')?$select=api` and allows a client
app when its id is in `api.preAuthorizedApplications[].appId`: the list the agent's
owner maintains in Entra ("Expose an API" → "Authorized client applications").

Design decisions, and why:

- **Token.** azure-identity's `ClientSecretCredential`, or `CertificateCredential` when
  a certificate is configured (client credentials). The scope is the Graph resource's
  `/.default`: the national cloud's Graph for its known hosts, else
  `https://graph.microsoft.com/.default` (a proxy or a local Graph double is still sent
  a token for Graph itself).
  The credential caches and renews the token itself; a lock makes concurrent refreshes
  of different agents share one token request instead of racing to Entra. The source
  owns the credential (`aclose()` closes it) but not the `httpx.AsyncClient`.
- **Cache per agent, TTL (default 300 s) on the injected monotonic `Clock`.** Session
  starts must not cost a Graph round trip each: Graph throttles per app and tenant, and
  a pre-authorization change taking up to the TTL to show is acceptable.
- **Single flight.** All callers for one agent share one in-flight Graph request, so
  a burst of 1,000 session starts costs one Graph call.
- **Stale-while-revalidate, bounded.** An expired entry is still served while its
  refresh runs in the background (callers never wait on Graph for an agent we know),
  and while Graph is failing, for at most `max_stale` seconds past its TTL (default
  3600; 0 disables it). An answer older than that is not used: fail closed.
- **Fail closed.** With nothing usable cached, any failure (timeout, network error,
  5xx, 401/403, token acquisition, a body that is not what Graph sends) raises
  `AuthorizationUnavailable` (503), never an allow. A Graph 404 `Request_ResourceNotFound`
  is a real answer ("no such app registration") and is cached like any other; a 404
  without Graph's OData error (a wrong `graph_url`, a proxy) is a failure.
- **Backoff after a failure.** After a failed lookup for an agent, no new Graph request
  is made for it for `failure_backoff` seconds (default 5, the `Retry-After` LKPS's
  own 503 carries): callers get the stale entry or a 503 at once, so an outage does not
  turn the request rate into a Graph request rate.
- **429 is global.** Graph throttles an application per tenant, not per resource read,
  so a `429` stops *every* Graph request from this source until `Retry-After`
  (seconds or an HTTP-date; 10 s when absent or unparseable, capped at 300 s) has
  passed; meanwhile stale entries are served and everything else gets 503.
- **Readiness reflects this instance's configuration, not Graph's health.** `ready()`
  is false only while Entra refuses LKPS's credentials (400/401) or Graph refuses its
  token (401/403, e.g. `Application.Read.All` not granted): a rollout with a bad secret
  then stalls instead of replacing healthy instances. A Graph outage or throttling is
  shared by every instance; failing readiness everywhere would only turn 503s for
  enforcing agents into a total outage.
- **Agent ids are UUIDs.** Anything else is answered `None` (unknown) without asking
  Graph, so no caller-supplied text is ever spliced into a Graph URL.
- **No token or secret is logged**: log lines carry the agent id, the reason, Graph's
  status, OData code and `request-id`, and Entra's `AADSTS` code.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from azure.core.credentials import AccessToken
from azure.core.exceptions import AzureError, ClientAuthenticationError
from azure.identity.aio import CertificateCredential, ClientSecretCredential

from lkps.authorization.source import AuthorizationUnavailable
from lkps.clock import Clock
from lkps.config import ConfigurationError, Settings
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
    """What the source needs of an azure-identity async credential."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Answer:
    clients: frozenset[str] | None  # None: Graph has no such app registration
    fetched_at: float  # clock.monotonic() when the request that produced it started


class _LookupFailed(Exception):
    def __init__(self, reason: str, *, backoff: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        # False when the failure sets its own pause (429 Retry-After) instead.
        self.backoff = backoff


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


def _canonical_app_id(value: str) -> str | None:
    try:
        return str(uuid.UUID(value.strip()))
    except (ValueError, AttributeError):
        return None


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


class GraphAuthorizationSource:
    """`AuthorizationSource` backed by Microsoft Graph (see the module docstring)."""

    name = "graph"

    def __init__(
        self,
        credential: GraphCredential,
        http: httpx.AsyncClient,
        clock: Clock,
        *,
        graph_url: str = GRAPH_URL,
        scope: str = GRAPH_SCOPE,
        cache_ttl: float = 300.0,
        max_stale: float = 3600.0,
        timeout: float = 10.0,
        failure_backoff: float = 5.0,
        max_entries: int = 10_000,
    ) -> None:
        if cache_ttl < 0 or max_stale < 0 or failure_backoff < 0:
            raise ValueError("cache_ttl, max_stale and failure_backoff must not be negative")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._credential = credential
        self._http = http
        self._clock = clock
        self._graph_url = graph_url.rstrip("/")
        self._scope = scope
        self._ttl = cache_ttl
        self._max_stale = max_stale
        self._timeout = timeout
        self._failure_backoff = failure_backoff
        self._max_entries = max_entries
        self._cache: dict[str, _Answer] = {}
        self._inflight: dict[str, asyncio.Task[_Answer | str]] = {}
        self._failures: dict[str, tuple[float, str]] = {}  # agent -> (when, reason)
        self._throttled_until: float | None = None
        self._token_lock = asyncio.Lock()
        self._configuration_problem: str | None = None
        # The agent whose lookup met a Graph 401/403: re-checking needs a Graph read;
        # None while the problem is LKPS's credentials (a token request re-checks it).
        self._problem_agent: str | None = None
        self._recheck: asyncio.Task[bool] | None = None
        self._last_recheck: float | None = None
        self._closed = False
        # Observability.
        self.graph_requests = 0
        self.graph_failures = 0
        self.cache_hits = 0
        self.stale_served = 0
        self.throttled = 0

    # AuthorizationSource.

    async def pre_authorized_clients(self, agent_id: str) -> frozenset[str] | None:
        agent = _canonical_app_id(agent_id)
        if agent is None:
            log.info(
                "agent id %r is not an app id; not asking Graph",
                agent_id,
                extra={"agent_id": agent_id, "authz_source": self.name},
            )
            return None
        if self._closed:
            raise AuthorizationUnavailable("the Graph authorization source is closed")
        now = self._clock.monotonic()
        entry = self._cache.get(agent)
        if entry is not None:
            age = now - entry.fetched_at
            if age < self._ttl:
                self.cache_hits += 1
                return entry.clients
            if age - self._ttl <= self._max_stale:
                self.stale_served += 1
                self._start_lookup(agent, now)  # in the background, if Graph may be asked
                return entry.clients
        task = self._start_lookup(agent, now)
        if task is None:
            reason = self._blocked_reason(agent, now) or "Graph may not be asked now"
            log.warning(
                "no usable answer for agent %s, Graph not asked: %s; failing closed",
                agent,
                reason,
                extra={"agent_id": agent, "reason": reason},
            )
            raise AuthorizationUnavailable(reason)
        outcome = await asyncio.shield(task)
        if isinstance(outcome, str):
            raise AuthorizationUnavailable(outcome)
        return outcome.clients

    def ready(self) -> bool:
        """False while LKPS's credentials or Graph permission are wrong (not while Graph
        is down or throttling). While false, each call schedules a re-check (at most one
        per `failure_backoff`), so the instance becomes ready again once it is fixed,
        even without traffic."""
        if self._closed:
            return False
        if self._configuration_problem is not None:
            self._schedule_recheck()
        return self._configuration_problem is None

    async def start(self) -> None:
        """Check the credentials at startup, so readiness reflects a wrong secret or a
        missing Graph permission before the first session start does."""
        await self.verify_access()

    async def verify_access(self) -> bool:
        """Check LKPS's access now: a Graph token (and, after a Graph 401/403, a Graph
        read). Updates `ready()`; never raises. Call it at startup so readiness reflects
        a wrong secret before the first session start does."""
        if self._closed:
            return False
        agent = self._problem_agent
        if agent is not None:
            task = self._start_lookup(agent, self._clock.monotonic())
            if task is None:
                return False
            return not isinstance(await asyncio.shield(task), str)
        try:
            await self._access_token()
        except _LookupFailed:
            return False
        self._configuration_problem = None
        return True

    def _schedule_recheck(self) -> None:
        if self._recheck is not None and not self._recheck.done():
            return
        now = self._clock.monotonic()
        if self._last_recheck is not None and now - self._last_recheck < self._failure_backoff:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the event loop: nothing to schedule on
            return
        self._last_recheck = now
        self._recheck = loop.create_task(self.verify_access(), name="lkps-graph-recheck")

    # Lifecycle and tests.

    async def wait_for_lookups(self) -> None:
        """Wait until no Graph lookup (foreground, background or readiness re-check) is
        in flight."""
        while self._inflight or (self._recheck is not None and not self._recheck.done()):
            pending: list[asyncio.Task[Any]] = list(self._inflight.values())
            if self._recheck is not None:
                pending.append(self._recheck)
            await asyncio.gather(*pending, return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel lookups in flight and close the credential (not the HTTP client)."""
        self._closed = True
        tasks: list[asyncio.Task[Any]] = list(self._inflight.values())
        if self._recheck is not None:
            tasks.append(self._recheck)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._credential.close()

    @property
    def configuration_problem(self) -> str | None:
        """Why `ready()` is false, when it is."""
        return self._configuration_problem

    # Lookups.

    def _blocked_reason(self, agent: str, now: float) -> str | None:
        if self._throttled_until is not None and now < self._throttled_until:
            wait = self._throttled_until - now
            return f"Graph throttled LKPS; no Graph request for another {wait:.0f}s"
        failure = self._failures.get(agent)
        if failure is not None and now - failure[0] < self._failure_backoff:
            return (
                f"{failure[1]} (next attempt in {self._failure_backoff - (now - failure[0]):.0f}s)"
            )
        return None

    def _start_lookup(self, agent: str, now: float) -> asyncio.Task[_Answer | str] | None:
        """The lookup in flight for `agent`, a new one, or None while Graph may not be asked."""
        task = self._inflight.get(agent)
        if task is not None:
            return task
        if self._blocked_reason(agent, now) is not None:
            return None
        task = asyncio.create_task(self._lookup(agent, now), name=f"lkps-graph-lookup-{agent}")
        self._inflight[agent] = task

        def forget(done: asyncio.Task[_Answer | str]) -> None:
            if self._inflight.get(agent) is done:
                del self._inflight[agent]

        task.add_done_callback(forget)
        return task

    async def _lookup(self, agent: str, started: float) -> _Answer | str:
        """One Graph lookup; never raises (but for cancellation): a failure is its reason."""
        try:
            clients = await self._query_graph(agent)
        except _LookupFailed as failure:
            return self._failed(agent, failure.reason, backoff=failure.backoff)
        except Exception as exc:  # anything unforeseen still fails closed
            log.exception("unexpected error in a Graph lookup", extra={"agent_id": agent})
            return self._failed(agent, f"unexpected {type(exc).__name__} in the Graph lookup")
        answer = _Answer(clients, started)
        self._failures.pop(agent, None)
        self._configuration_problem = self._problem_agent = None
        self._cache.pop(agent, None)  # re-insert: the dict stays ordered by refresh time
        self._cache[agent] = answer
        self._evict()
        return answer

    def _failed(self, agent: str, reason: str, *, backoff: bool = True) -> str:
        self.graph_failures += 1
        if backoff:
            self._failures[agent] = (self._clock.monotonic(), reason)
        stale = agent in self._cache
        log.warning(
            "Graph lookup for agent %s failed: %s; %s",
            agent,
            reason,
            "serving the cached answer while it may be used" if stale else "failing closed",
            extra={"agent_id": agent, "reason": reason},
        )
        return reason

    def _evict(self) -> None:
        if len(self._cache) <= self._max_entries:
            return
        now = self._clock.monotonic()
        horizon = self._ttl + self._max_stale
        for agent in [a for a, e in self._cache.items() if now - e.fetched_at > horizon]:
            del self._cache[agent]
        while len(self._cache) > self._max_entries:
            del self._cache[next(iter(self._cache))]
        for agent in [a for a in self._failures if a not in self._cache]:
            if now - self._failures[agent][0] >= self._failure_backoff:
                del self._failures[agent]

    async def _access_token(self) -> str:
        try:
            async with asyncio.timeout(self._timeout), self._token_lock:
                token = await self._credential.get_token(self._scope)
        except TimeoutError:
            raise _LookupFailed(
                f"no Graph token: Entra did not answer within {self._timeout:g}s"
            ) from None
        except ClientAuthenticationError as exc:
            code = _AADSTS.search(str(exc.message or ""))
            detail = code.group(0) if code else type(exc).__name__
            reason = f"no Graph token: Entra refused LKPS's credentials ({detail})"
            if exc.status_code in (400, 401):
                self._set_configuration_problem(reason, agent=None)
            raise _LookupFailed(reason) from None
        except (AzureError, OSError, ValueError) as exc:
            raise _LookupFailed(f"no Graph token: {type(exc).__name__}") from None
        return token.token

    def _set_configuration_problem(self, reason: str, *, agent: str | None) -> None:
        if self._configuration_problem is None:
            log.error("Graph authorization misconfigured: %s", reason)
        self._configuration_problem = reason
        self._problem_agent = agent

    async def _query_graph(self, agent: str) -> frozenset[str] | None:
        token = await self._access_token()
        url = f"{self._graph_url}/v1.0/applications(appId='{agent}')"
        client_request_id = str(uuid.uuid4())
        self.graph_requests += 1
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
            raise _LookupFailed(f"Graph did not answer within {self._timeout:g}s") from None
        except httpx.HTTPError as exc:
            GRAPH_REQUESTS.labels("error").inc()
            raise _LookupFailed(f"Graph request failed: {type(exc).__name__}") from None
        GRAPH_REQUESTS.labels(_outcome_of(response.status_code)).inc()

        status = response.status_code
        request_id = response.headers.get("request-id", client_request_id)
        if status == 200:
            try:
                clients = parse_pre_authorized_applications(response.json())
            except (ValueError, MalformedGraphResponse) as exc:
                raise _LookupFailed(
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
            self._throttle(response)
            raise _LookupFailed(f"Graph throttled LKPS ({where})", backoff=False)
        if status in (401, 403):
            reason = (
                f"Graph refused LKPS's token ({where}); LKPS needs the Application.Read.All "
                "application permission with admin consent"
            )
            self._set_configuration_problem(reason, agent=agent)
            raise _LookupFailed(reason)
        raise _LookupFailed(f"Graph answered {where}")

    def _throttle(self, response: httpx.Response) -> None:
        wait = parse_retry_after(response.headers.get("Retry-After"), self._clock.now())
        wait = min(DEFAULT_RETRY_AFTER if wait is None else wait, MAX_RETRY_AFTER)
        until = self._clock.monotonic() + wait
        if self._throttled_until is None or until > self._throttled_until:
            self._throttled_until = until
        self.throttled += 1
        log.warning("Graph throttled LKPS; pausing every Graph request for %.1fs", wait)


def build_graph_credential(settings: Settings) -> GraphCredential:
    """LKPS's own app-only credential: a certificate when one is configured, else the secret."""
    if not settings.entra_tenant_id or not settings.entra_client_id:
        raise ConfigurationError(
            "LKPS_ENTRA_TENANT_ID and LKPS_ENTRA_CLIENT_ID are required for LKPS_AUTHZ_SOURCE=graph"
        )
    # The authority host (https only: azure-identity refuses anything else) and, for a
    # TLS-inspecting proxy or a test Entra, the CA bundle to trust for it.
    options: dict[str, Any] = {"authority": settings.entra_authority}
    if settings.tls_ca_bundle is not None:
        options["connection_verify"] = str(settings.tls_ca_bundle)
    certificate = settings.entra_client_certificate_path
    secret = settings.entra_client_secret.get_secret_value()
    if certificate is None and not secret:
        raise ConfigurationError(
            "LKPS_ENTRA_CLIENT_SECRET or LKPS_ENTRA_CLIENT_CERTIFICATE_PATH is required for "
            "LKPS_AUTHZ_SOURCE=graph"
        )
    try:
        if certificate is not None:
            return CertificateCredential(
                settings.entra_tenant_id,
                settings.entra_client_id,
                certificate_path=str(certificate),
                **options,
            )
        return ClientSecretCredential(
            settings.entra_tenant_id, settings.entra_client_id, secret, **options
        )
    except (OSError, ValueError, TypeError) as exc:
        what = (
            f"LKPS_ENTRA_CLIENT_CERTIFICATE_PATH {certificate} (a PEM or PKCS12 file with the "
            "certificate and its unencrypted RSA private key)"
            if certificate is not None
            else "LKPS_ENTRA_TENANT_ID, LKPS_ENTRA_AUTHORITY"
        )
        raise ConfigurationError(
            f"cannot build LKPS's Graph credential from {what}: {type(exc).__name__}"
        ) from None


def graph_source_from_settings(
    settings: Settings, http: httpx.AsyncClient, clock: Clock
) -> GraphAuthorizationSource:
    """The Graph source a running LKPS uses. `http` stays the caller's to close."""
    return GraphAuthorizationSource(
        build_graph_credential(settings),
        http,
        clock,
        graph_url=settings.graph_url,
        scope=graph_scope_for(settings.graph_url),
        cache_ttl=settings.graph_cache_ttl_seconds,
        timeout=settings.graph_timeout_seconds,
    )
