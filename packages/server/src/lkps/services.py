"""The composition root: the long-lived parts of a running LKPS, built, started and
stopped once by the application lifespan. Nothing here decides anything; each part
gets the values it needs, not the settings."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import httpx

from lkps.agents import AgentRegistry, AgentService, AgentTerms, PresenceSweeper
from lkps.audit import AuditEvent, AuditLog, AuditScope, AuditTrail, RequestContext
from lkps.audit.checkpoints import Checkpointer, CheckpointSigner
from lkps.audit.keys import load_audit_keys
from lkps.audit.rejections import RejectionRate
from lkps.authorization import AuthorizationSource, ClientAuthorizer, FileAuthorizationSource
from lkps.authorization.graph import graph_source_from_settings
from lkps.authorization.overrides import AuthorizationOverrides
from lkps.authorization.service import AuthorizationService
from lkps.background import BackgroundJobs
from lkps.clock import Clock, SystemClock
from lkps.config import ConfigurationError, Settings
from lkps.errors import ServiceUnavailable
from lkps.gateway import AgentGateway, GatewayCredentials, GatewayRelay
from lkps.gateway.live import LiveConnections, new_replica_id
from lkps.gateway.metered import MeteredObserver
from lkps.gateway.refusals import AuditedRefusals
from lkps.gateway.upstream import AiohttpUpstream
from lkps.identity import AppRoles, JwksCache, TokenValidator
from lkps.limits.buckets import BucketStore, LocalBuckets
from lkps.limits.limiter import LimitSettings, RateLimiter
from lkps.limits.redis import RedisBuckets
from lkps.livekit import TokenMinter
from lkps.livekit.dispatch import AgentDispatcher, LiveKitDispatcher
from lkps.livekit.webhooks import WebhookVerifier
from lkps.outbound import outbound_tls
from lkps.sessions import SessionService
from lkps.sessions.lifecycle import SessionLifecycle
from lkps.sessions.metrics import count_session_start
from lkps.sessions.reading import SessionRecords
from lkps.store import Database
from lkps.store.connections import registration_open
from lkps.store.preflight import prepare_database

log = logging.getLogger(__name__)


@dataclass
class Services:
    db: Database
    audit: AuditLog
    audit_trail: AuditTrail
    jwks: JwksCache
    identity: TokenValidator
    authorizer: ClientAuthorizer
    agents: AgentService
    sessions: SessionService
    authorization: AuthorizationService
    sweeper: PresenceSweeper
    lifecycle: SessionLifecycle
    session_records: SessionRecords
    webhooks: WebhookVerifier
    # Set when LKPS_AGENT_CONNECTION=gateway.
    gateway: AgentGateway | None = None
    connections: LiveConnections | None = None
    background: BackgroundJobs = field(default_factory=BackgroundJobs)
    # Set when LKPS_AUDIT_SIGNING_KEY is.
    checkpointer: Checkpointer | None = None

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


def build_gateway(
    settings: Settings,
    db: Database,
    audit: AuditLog,
    minter: TokenMinter,
    credentials: GatewayCredentials,
    upstream: AiohttpUpstream,
    connections: LiveConnections,
) -> AgentGateway:
    """The /agent gateway: the relay mints a LiveKit worker token per connection."""
    refusals = AuditedRefusals(audit)
    relay = GatewayRelay(
        livekit_url=settings.livekit_url,
        # Only for the upstream handshake: LiveKit checks it when the socket opens.
        worker_token=lambda agent_id: (
            minter.agent_token(agent_name=agent_id, ttl=UPSTREAM_TOKEN_TTL).jwt
        ),
        connector=upstream,
        refusals=refusals,
        observer=MeteredObserver(connections, target_load=settings.livekit_agent_target_load),
        register_timeout=settings.agent_gateway_register_timeout_seconds,
        max_message_bytes=settings.agent_gateway_max_message_bytes,
    )
    return AgentGateway(
        credentials,
        relay,
        refusals,
        public_url=settings.agent_gateway_url,
        registration_open=lambda agent_id, rid: registration_open(db, agent_id, rid),
    )


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


UPSTREAM_TOKEN_TTL = timedelta(minutes=5)


@asynccontextmanager
async def running_services(
    settings: Settings,
    *,
    clock: Clock | None = None,
    jwks_transport: httpx.AsyncBaseTransport | None = None,
    authorization_source: AuthorizationSource | None = None,
    agent_dispatcher: AgentDispatcher | None = None,
) -> AsyncIterator[Services]:
    clock = clock or SystemClock()
    await prepare_database(settings.database_url)
    roles = AppRoles(
        admin=settings.admin_role, auditor=settings.auditor_role, agent=settings.agent_role
    )
    # Every teardown step is registered as soon as there is something to tear down, and
    # each runs (in reverse) whatever the others, or a start-up step, raised.
    async with contextlib.AsyncExitStack() as teardown:
        db = Database.from_url(
            settings.database_url,
            timeout=settings.database_timeout_seconds,
            pool_size=settings.database_pool_size,
        )
        teardown.push_async_callback(_shutdown_step, "dispose of the database", db.dispose)
        audit_keys = load_audit_keys(settings)
        if audit_keys is None:
            raise ConfigurationError(
                "LKPS_AUDIT_KEY or LKPS_AUDIT_KEY_FILE is required outside dev"
            )
        audit = AuditLog(
            db,
            keys=audit_keys,
            clock=clock,
            observers=[count_session_start],
            rejections=RejectionRate(
                clock,
                window_seconds=settings.audit_rejection_window_seconds,
                per_window=settings.audit_rejections_per_window,
            ),
        )
        http = httpx.AsyncClient(verify=outbound_tls(settings.tls_ca_bundle))
        teardown.push_async_callback(_shutdown_step, "close the HTTP client", http.aclose)
        jwks_http = http
        if jwks_transport:
            jwks_http = httpx.AsyncClient(transport=jwks_transport)
            teardown.push_async_callback(_shutdown_step, "close the JWKS client", jwks_http.aclose)
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
            gateway=settings.agent_connection == "gateway",
            target_load=settings.livekit_agent_target_load,
        )
        overrides = AuthorizationOverrides(db, clock)
        limits = build_rate_limiter(settings, clock)
        teardown.push_async_callback(_shutdown_step, "close the rate limiter", limits.aclose)
        source = authorization_source or build_authorization_source(settings, http, clock)
        teardown.push_async_callback(
            _shutdown_step, "close the authorization source", source.aclose
        )
        gateway_credentials = (
            GatewayCredentials(settings.livekit_api_secret, clock)
            if settings.agent_connection == "gateway"
            else None
        )
        upstream = AiohttpUpstream(max_message_bytes=settings.agent_gateway_max_message_bytes)
        teardown.push_async_callback(
            _shutdown_step, "close the gateway's LiveKit client", upstream.aclose
        )
        connections = (
            LiveConnections(
                db,
                clock,
                replica_id=new_replica_id(),
                target_load=settings.livekit_agent_target_load,
                lease_seconds=settings.agent_gateway_lease_seconds,
            )
            if gateway_credentials is not None
            else None
        )
        # Gateway mode: an ended registration's worker sockets close (at once here; the
        # other replicas' lease renewals find it in the store).
        registrations_ended = connections.end_registrations if connections is not None else None
        authorizer = ClientAuthorizer(source)
        checkpointer = (
            Checkpointer(audit, CheckpointSigner.from_pem_file(settings.audit_signing_key), clock)
            if settings.audit_signing_key is not None
            else None
        )
        dispatcher = agent_dispatcher or LiveKitDispatcher(
            settings.effective_livekit_api_url,
            settings.livekit_api_key,
            settings.livekit_api_secret.get_secret_value(),
            timeout=settings.agent_join_timeout_seconds,
        )
        teardown.push_async_callback(
            _shutdown_step, "close the LiveKit dispatch client", dispatcher.aclose
        )
        lifecycle = SessionLifecycle(
            db,
            audit,
            dispatcher,
            clock,
            agent_join_timeout=settings.agent_join_timeout_seconds,
        )
        services = Services(
            db=db,
            audit=audit,
            audit_trail=AuditTrail(audit, roles, checkpointer),
            checkpointer=checkpointer,
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
            agents=AgentService(
                registry,
                overrides,
                minter,
                limits,
                roles=roles,
                terms=AgentTerms(
                    livekit_url=settings.livekit_url,
                    agent_token_ttl=settings.agent_token_ttl,
                    heartbeat_interval=settings.heartbeat_interval,
                    presence_ttl=settings.presence_ttl,
                    agent_connection=settings.agent_connection,
                    gateway_url=settings.agent_gateway_url,
                ),
                gateway_credentials=gateway_credentials,
                target_load=settings.livekit_agent_target_load,
                registrations_ended=registrations_ended,
            ),
            sessions=SessionService(
                registry,
                authorizer,
                minter,
                limits,
                clock,
                livekit_url=settings.livekit_url,
                max_participants=settings.room_max_participants,
                participant_token_ttl=settings.participant_token_ttl,
            ),
            authorization=AuthorizationService(overrides, roles),
            sweeper=PresenceSweeper(registry, audit, registrations_ended=registrations_ended),
            lifecycle=lifecycle,
            session_records=SessionRecords(lifecycle, roles),
            webhooks=WebhookVerifier(
                settings.livekit_api_key,
                settings.livekit_api_secret.get_secret_value(),
                clock,
                max_age_seconds=settings.livekit_webhook_max_age_seconds,
            ),
            gateway=(
                build_gateway(
                    settings, db, audit, minter, gateway_credentials, upstream, connections
                )
                if gateway_credentials is not None and connections is not None
                else None
            ),
            connections=connections,
        )
        if checkpointer is not None:
            # Runs after the writer has stopped (the teardown runs in reverse): the last
            # checkpoint covers the last record.
            teardown.push_async_callback(
                _shutdown_step, "write the last audit checkpoint", checkpointer.take
            )
        await audit.start()
        teardown.push_async_callback(_shutdown_step, "stop the audit writer", audit.stop)
        # Stopped before the audit writer (LIFO): its last steps commit their records.
        await lifecycle.start()
        teardown.push_async_callback(_shutdown_step, "stop the session step writer", lifecycle.stop)
        await jwks.refresh()
        await source.start()
        with contextlib.suppress(ServiceUnavailable):
            await services.sweeper.update_gauges()
        if connections is not None:
            # Before any worker connects; released after the jobs stopped (LIFO).
            await connections.start()
            teardown.push_async_callback(
                _shutdown_step, "release the gateway's worker connections", connections.release
            )
        teardown.push_async_callback(
            _shutdown_step, "stop the background jobs", services.background.aclose
        )
        services.background.every("lkps-jwks-refresh", jwks.refresh, jwks.next_refresh_in)
        services.background.every(
            "lkps-presence-sweeper", services.sweeper.run_once, max(1.0, settings.presence_ttl / 3)
        )
        if checkpointer is not None:
            services.background.every(
                "lkps-audit-checkpoint", checkpointer.take, settings.audit_checkpoint_seconds
            )
        services.background.every(
            "lkps-session-no-shows",
            lifecycle.check_no_shows,
            min(1.0, settings.agent_join_timeout_seconds / 4),
        )
        if connections is not None:
            services.background.every(
                "lkps-gateway-lease", connections.renew, connections.lease_seconds / 3
            )
        yield services


async def _shutdown_step(what: str, step: Callable[[], Awaitable[object]]) -> None:
    """One step of the teardown: a failure is logged and the next step still runs."""
    try:
        await step()
    except Exception:
        log.exception("shutdown: could not %s", what)
