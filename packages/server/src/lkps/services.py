"""The long-lived parts of a running LKPS, built once by the application lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from lkps.agents import AgentRegistry
from lkps.audit import (
    AuditEntry,
    AuditEvent,
    AuditLog,
    AuditScope,
    AuditUnavailable,
    Outcome,
    RequestContext,
)
from lkps.authorization import AuthorizationSource, ClientAuthorizer, FileAuthorizationSource
from lkps.authorization.graph import graph_source_from_settings
from lkps.authorization.overrides import AuthorizationOverrides
from lkps.clock import Clock, SystemClock
from lkps.config import ConfigurationError, Settings
from lkps.errors import ServiceUnavailable
from lkps.identity import JwksCache, TokenValidator
from lkps.limits.buckets import BucketStore, LocalBuckets
from lkps.limits.limiter import LimitSettings, RateLimiter
from lkps.limits.redis import RedisBuckets
from lkps.livekit import TokenMinter
from lkps.metrics import AGENTS_PRESENT, AGENTS_REGISTERED, REGISTRATIONS_LIVE
from lkps.sessions import SessionService
from lkps.store import Database
from lkps.store.engine import READ_COMMITTED, is_sqlite, isolation_on, on_one_connection
from lkps.store.migrate import head_revision, revision_on, upgrade_async

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    clock: Clock
    db: Database
    audit: AuditLog
    jwks: JwksCache
    identity: TokenValidator
    authorizer: ClientAuthorizer
    registry: AgentRegistry
    sessions: SessionService
    minter: TokenMinter
    overrides: AuthorizationOverrides
    limits: RateLimiter
    background: list[asyncio.Task[None]] = field(default_factory=list)

    def audit_scope(
        self,
        event: AuditEvent,
        context: RequestContext,
        *,
        failure_message: str = "Internal server error",
        granted_status: int = 200,
    ) -> AuditScope:
        return AuditScope(
            self.audit,
            self.clock,
            event,
            context,
            failure_message=failure_message,
            granted_status=granted_status,
        )


def build_authorization_source(
    settings: Settings, http: httpx.AsyncClient, clock: Clock
) -> AuthorizationSource:
    if settings.effective_authz_source == "graph":
        return graph_source_from_settings(settings, http, clock)
    if settings.authz_file is None:
        raise ConfigurationError("LKPS_AUTHZ_FILE is required when LKPS_AUTHZ_SOURCE=file")
    return FileAuthorizationSource(settings.authz_file)


def build_rate_limiter(settings: Settings, clock: Clock) -> RateLimiter:
    local = LocalBuckets(clock)
    store: BucketStore = (
        RedisBuckets.from_url(settings.redis_url, local) if settings.redis_url else local
    )
    return RateLimiter(
        store,
        LimitSettings(
            window_seconds=settings.rate_limit_window_seconds,
            session_per_client=settings.rate_limit_session_per_client,
            session_per_user=settings.rate_limit_session_per_user,
            register_per_agent=settings.rate_limit_register_per_agent,
        ),
    )


def outbound_tls(settings: Settings) -> ssl.SSLContext:
    """The system's CAs, plus LKPS_TLS_CA_BUNDLE when set."""
    context = ssl.create_default_context()
    if settings.tls_ca_bundle is not None:
        try:
            context.load_verify_locations(cafile=settings.tls_ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"LKPS_TLS_CA_BUNDLE is unusable: {exc}") from None
    return context


async def prepare_database(settings: Settings, db_url: str) -> None:
    """SQLite installs migrate themselves; elsewhere `lkps db upgrade` is an explicit step,
    and LKPS refuses a store it cannot run on correctly rather than fail request by
    request."""
    if is_sqlite(db_url):
        await upgrade_async(db_url)
        return

    async def ask(connection: AsyncConnection) -> tuple[str | None, str]:
        return await revision_on(connection), await isolation_on(connection)

    try:
        revision, isolation = await on_one_connection(db_url, ask)
    except Exception as exc:  # the store may come up later; readiness reports it
        log.warning("could not check the database at start-up", extra={"error": type(exc).__name__})
        return
    if revision != head_revision():
        raise ConfigurationError(
            f"database schema is at {revision or 'nothing'}, LKPS needs {head_revision()}: "
            "run `lkps db upgrade`"
        )
    if isolation != READ_COMMITTED:
        role = make_url(db_url).username or "<LKPS's role>"
        raise ConfigurationError(
            f"PostgreSQL runs LKPS's transactions at {isolation.upper()}; LKPS needs READ "
            "COMMITTED (concurrent audit writers fail otherwise). LKPS asks for it when it "
            "connects, and something in between dropped that (PgBouncer's "
            "ignore_startup_parameters): make it the role's default, "
            f"ALTER ROLE {role} SET default_transaction_isolation = 'read committed'"
        )


@asynccontextmanager
async def running_services(
    settings: Settings,
    *,
    clock: Clock | None = None,
    jwks_transport: httpx.AsyncBaseTransport | None = None,
    authorization_source: AuthorizationSource | None = None,
) -> AsyncIterator[Services]:
    clock = clock or SystemClock()
    await prepare_database(settings, settings.database_url)
    db = Database.from_url(
        settings.database_url,
        timeout=settings.database_timeout_seconds,
        pool_size=settings.database_pool_size,
    )
    audit = AuditLog(db)
    async with contextlib.AsyncExitStack() as clients:
        http = await clients.enter_async_context(httpx.AsyncClient(verify=outbound_tls(settings)))
        jwks_http = (
            await clients.enter_async_context(httpx.AsyncClient(transport=jwks_transport))
            if jwks_transport
            else http
        )
        jwks = JwksCache(
            settings.jwks_url,
            jwks_http,
            clock,
            refresh_cooldown=settings.entra_jwks_refresh_cooldown_seconds,
            refresh_interval=settings.entra_jwks_refresh_interval_seconds,
            timeout=settings.entra_jwks_timeout_seconds,
        )
        minter = TokenMinter(settings.livekit_api_key, settings.livekit_api_secret, clock)
        registry = AgentRegistry(
            db,
            clock,
            presence_ttl=settings.presence_ttl,
            default_enforce=settings.default_enforce_client_authz,
        )
        source = authorization_source or build_authorization_source(settings, http, clock)
        authorizer = ClientAuthorizer(source)
        services = Services(
            settings=settings,
            clock=clock,
            db=db,
            audit=audit,
            jwks=jwks,
            identity=TokenValidator(
                jwks,
                clock,
                tenant_id=settings.entra_tenant_id,
                audiences=settings.entra_audiences,
                issuers=settings.accepted_issuers,
                cwid_claims=settings.cwid_claims,
                leeway_seconds=settings.entra_leeway_seconds,
                cache_size=settings.verified_token_cache_size,
            ),
            authorizer=authorizer,
            registry=registry,
            sessions=SessionService(
                registry,
                authorizer,
                minter,
                clock,
                livekit_url=settings.livekit_url,
                max_participants=settings.room_max_participants,
                participant_token_ttl=settings.participant_token_ttl,
            ),
            minter=minter,
            overrides=AuthorizationOverrides(db, clock),
            limits=build_rate_limiter(settings, clock),
        )
        await audit.start()
        await jwks.refresh()
        await source.start()
        with contextlib.suppress(ServiceUnavailable):
            await update_agent_gauges(services)
        services.background += [
            asyncio.create_task(jwks.run_background_refresh(), name="lkps-jwks-refresh"),
            asyncio.create_task(_expire_registrations(services), name="lkps-presence-sweeper"),
        ]
        try:
            yield services
        finally:
            for task in services.background:
                task.cancel()
            for task in services.background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await source.aclose()
            await services.limits.aclose()
            await audit.stop()
            await db.dispose()


async def _expire_registrations(services: Services) -> None:
    """Record each registration whose presence lapsed, once, in the audit trail.

    Presence itself never depends on this sweep: a session start compares
    `expires_at` with the clock. The sweep only makes the lapse visible.
    """
    interval = max(1.0, services.settings.presence_ttl / 3)
    while True:
        await asyncio.sleep(interval)
        try:
            await sweep_expired_registrations(services)
            await update_agent_gauges(services)
        except Exception:
            log.exception("presence sweep failed; will retry")


async def update_agent_gauges(services: Services) -> None:
    counts = await services.registry.counts()
    AGENTS_REGISTERED.set(counts.registered)
    AGENTS_PRESENT.set(counts.present)
    REGISTRATIONS_LIVE.set(counts.live_registrations)


async def sweep_expired_registrations(services: Services) -> int:
    expired = await services.registry.claim_expired()
    for registration_id, agent_id in expired:
        entry = AuditEntry(
            event=AuditEvent.AGENT_EXPIRE,
            outcome=Outcome.RECORDED,
            status=0,
            occurred_at=services.clock.now(),
            record_id=str(uuid.uuid4()),
            reason="no register or heartbeat within the presence TTL",
            agent_id=agent_id,
            registration_id=registration_id,
        )
        try:
            await services.audit.append(entry)
        except AuditUnavailable:
            done = expired.index((registration_id, agent_id))
            await services.registry.reopen([r for r, _ in expired[done:]])
            raise
    return len(expired)
