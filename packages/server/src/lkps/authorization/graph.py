"""Pre-authorized clients read from the agent's app registration in Microsoft Graph.

`GraphAuthorizationSource` puts three small parts together, each in its own place:

- `GraphClient` (`graph_client.py`): LKPS's app-only token and the one Graph read,
  `applications(appId=...)?$select=api`, its answers and errors;
- `AnswerCache` (`cache.py`): TTL, single flight, bounded stale-while-revalidate, fail
  closed, backoff after a failure and a global pause on Graph's 429, as any source
  backed by a remote service would want them;
- `AccessWatch` (here): readiness.

Decisions that are the source's own, and why:

- **Readiness reflects this instance's configuration, not Graph's health.** `ready()`
  is false only while Entra refuses LKPS's credentials (400/401) or Graph refuses its
  token (401/403, e.g. `Application.Read.All` not granted): a rollout with a bad secret
  then stalls instead of replacing healthy instances. A Graph outage or throttling is
  shared by every instance; failing readiness everywhere would only turn 503s for
  enforcing agents into a total outage.
- **Agent ids are UUIDs.** Anything else is answered `None` (unknown) without asking
  Graph, so no caller-supplied text is ever spliced into a Graph URL.
- **Settings are read in one place**, `graph_source_from_settings` (and the credential
  it builds); the classes take plain values, so tests and other callers need no Settings.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import httpx
from azure.identity.aio import CertificateCredential, ClientSecretCredential

from lkps.authorization.cache import AnswerCache, CachePolicy, FetchFailed
from lkps.authorization.graph_client import (
    GraphAccessRefused,
    GraphClient,
    GraphCredential,
    GraphLookupFailed,
    GraphThrottled,
    graph_scope_for,
)
from lkps.authorization.source import AuthorizationUnavailable
from lkps.clock import Clock
from lkps.config import ConfigurationError, Settings

log = logging.getLogger(__name__)


def _canonical_app_id(value: str) -> str | None:
    try:
        return str(uuid.UUID(value.strip()))
    except (ValueError, AttributeError):
        return None


@dataclass(frozen=True, slots=True)
class AccessProblem:
    """Why LKPS's own access to Graph is wrong."""

    reason: str
    # The agent whose Graph read was refused: re-checking needs a Graph read. None when
    # Entra refused LKPS's credentials (a token request re-checks it).
    agent: str | None


class AccessWatch:
    """Whether LKPS's access to Graph is wrong, and the re-check that notices the fix.

    While a problem stands, `ready()` schedules `check` (at most one at a time, and one
    per `interval`), so the instance becomes ready again once the secret or permission is
    fixed, even without traffic.
    """

    def __init__(
        self, check: Callable[[], Coroutine[Any, Any, bool]], clock: Clock, interval: float
    ) -> None:
        self._check = check
        self._clock = clock
        self._interval = interval
        self.problem: AccessProblem | None = None
        self._recheck: asyncio.Task[bool] | None = None
        self._last_recheck: float | None = None

    def refused(self, reason: str, *, agent: str | None) -> None:
        if self.problem is None:
            log.error("Graph authorization misconfigured: %s", reason)
        self.problem = AccessProblem(reason, agent)

    def cleared(self) -> None:
        self.problem = None

    def ready(self) -> bool:
        if self.problem is not None:
            self._schedule_recheck()
        return self.problem is None

    def checking(self) -> bool:
        return self._recheck is not None and not self._recheck.done()

    async def settled(self) -> None:
        """Wait for the re-check under way, if any."""
        if self._recheck is not None:
            await asyncio.gather(self._recheck, return_exceptions=True)

    async def aclose(self) -> None:
        if self._recheck is not None:
            self._recheck.cancel()
        await self.settled()

    def _schedule_recheck(self) -> None:
        if self.checking():
            return
        now = self._clock.monotonic()
        if self._last_recheck is not None and now - self._last_recheck < self._interval:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the event loop: nothing to schedule on
            return
        self._last_recheck = now
        self._recheck = loop.create_task(self._check(), name="lkps-graph-recheck")


class GraphAuthorizationSource:
    """`AuthorizationSource` backed by Microsoft Graph (see the module docstring).

    Owns `client` (`aclose()` closes its credential, not its HTTP client).
    """

    name = "graph"

    def __init__(
        self, client: GraphClient, clock: Clock, policy: CachePolicy | None = None
    ) -> None:
        policy = policy or CachePolicy()
        self._client = client
        self._cache = AnswerCache(self._fetch, clock, policy, service="Graph")
        self._access = AccessWatch(self.verify_access, clock, policy.failure_backoff)
        self._closed = False

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
        return await self._cache.get(agent)

    def ready(self) -> bool:
        """False while LKPS's credentials or Graph permission are wrong (not while Graph
        is down or throttling); see `AccessWatch`."""
        return not self._closed and self._access.ready()

    async def start(self) -> None:
        """Check the credentials at startup, so readiness reflects a wrong secret or a
        missing Graph permission before the first session start does."""
        await self.verify_access()

    async def verify_access(self) -> bool:
        """Check LKPS's access now: a Graph token (and, after a Graph 401/403, a Graph
        read). Updates `ready()`; never raises."""
        if self._closed:
            return False
        problem = self._access.problem
        if problem is not None and problem.agent is not None:
            return await self._cache.revalidate(problem.agent)
        try:
            await self._client.access_token()
        except GraphAccessRefused as refused:
            self._access.refused(refused.reason, agent=None)
            return False
        except GraphLookupFailed:
            return False
        self._access.cleared()
        return True

    # Lifecycle, diagnostics and tests.

    async def wait_for_lookups(self) -> None:
        """Wait until no Graph lookup (foreground, background or readiness re-check) is
        in flight."""
        while self._cache.in_flight() or self._access.checking():
            await self._access.settled()
            await self._cache.settled()

    async def aclose(self) -> None:
        """Cancel lookups in flight and close the credential (not the HTTP client)."""
        self._closed = True
        await asyncio.gather(self._cache.aclose(), self._access.aclose())
        await self._client.aclose()

    @property
    def configuration_problem(self) -> str | None:
        """Why `ready()` is false, when it is."""
        return None if self._access.problem is None else self._access.problem.reason

    @property
    def graph_requests(self) -> int:
        return self._client.requests

    @property
    def throttled(self) -> int:
        return self._client.throttled

    @property
    def graph_failures(self) -> int:
        return self._cache.stats.failures

    @property
    def cache_hits(self) -> int:
        return self._cache.stats.hits

    @property
    def stale_served(self) -> int:
        return self._cache.stats.stale_served

    async def _fetch(self, agent: str) -> frozenset[str] | None:
        """One Graph read for the cache, noting what it says about LKPS's access."""
        try:
            clients = await self._client.pre_authorized_clients(agent)
        except GraphThrottled as throttled:
            raise FetchFailed(throttled.reason, pause=throttled.wait) from None
        except GraphAccessRefused as refused:
            self._access.refused(refused.reason, agent=agent if refused.by_graph else None)
            raise FetchFailed(refused.reason) from None
        except GraphLookupFailed as failure:
            raise FetchFailed(failure.reason) from None
        self._access.cleared()
        return clients


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
    client = GraphClient(
        build_graph_credential(settings),
        http,
        clock,
        graph_url=settings.graph_url,
        scope=graph_scope_for(settings.graph_url),
        timeout=settings.graph_timeout_seconds,
    )
    return GraphAuthorizationSource(
        client, clock, CachePolicy(ttl=settings.graph_cache_ttl_seconds)
    )
