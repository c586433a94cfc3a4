"""The one typed settings object, read from `LKPS_*` environment variables.

Everything tunable lives here so that a deployment is described by its environment
alone (contract §4). Values that only make sense together are checked together in
`Settings.check_servable`, which `lkps serve` calls before it binds a port.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from lkps.origins import AllowedOrigins, parse_origins

Environment = Literal["dev", "np", "prod"]
AuthzSource = Literal["graph", "file"]
HttpImplementation = Literal["httptools", "h11"]
AgentConnection = Literal["gateway", "direct"]

# The development identity provider's tenant. Its tokens are accepted only by an
# instance running with LKPS_ENV=dev; every other instance refuses to start with it.
DEV_TENANT_ID = "00000000-0000-4000-8000-00000000de70"
DEV_AUDIENCE = "api://lkps-dev"
DEV_JWKS_PATH = "/dev/idp"

DEFAULT_CWID_CLAIMS = ("cwid", "onprem_sam_account_name", "preferred_username", "upn", "oid")


class ConfigurationError(ValueError):
    """The settings cannot run a service: names every problem at once."""


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LKPS_", extra="ignore", frozen=True)

    env: Environment = "dev"

    # LiveKit: the credentials only LKPS ever holds.
    livekit_url: str = ""
    livekit_api_key: str = ""
    livekit_api_secret: SecretStr = SecretStr("")
    # `lkps dev` only: the livekit-server binary it runs beside LKPS (lkps.cli.livekit_dev).
    livekit_server_bin: Path | None = None

    # Entra ID token validation (contract §1).
    entra_tenant_id: str = ""
    entra_audiences: Annotated[list[str], NoDecode] = Field(default_factory=list)
    entra_jwks_url: str = ""
    entra_authority: str = "https://login.microsoftonline.com"
    entra_leeway_seconds: int = Field(default=60, ge=0, le=60)
    entra_jwks_refresh_cooldown_seconds: float = Field(default=60.0, ge=1.0)
    entra_jwks_refresh_interval_seconds: float = Field(default=3600.0, ge=10.0)
    entra_jwks_timeout_seconds: float = Field(default=5.0, gt=0)
    verified_token_cache_size: int = Field(default=10_000, ge=0)
    cwid_claims: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_CWID_CLAIMS)
    )
    agent_role: str = ""
    # App roles (in the token's `roles`) for the administrative and audit APIs.
    admin_role: str = "LKPS.Admin"
    auditor_role: str = "LKPS.Auditor"

    # LKPS's own app registration (its app-only Microsoft Graph token).
    entra_client_id: str = ""
    entra_client_secret: SecretStr = SecretStr("")
    entra_client_certificate_path: Path | None = None
    graph_url: str = "https://graph.microsoft.com"
    graph_cache_ttl_seconds: float = Field(default=300.0, ge=0)
    graph_timeout_seconds: float = Field(default=10.0, gt=0)
    # Extra CA certificates (PEM) trusted for LKPS's outbound HTTPS: Entra, Graph, JWKS.
    # For a TLS-inspecting corporate proxy, or a test Entra on 127.0.0.1.
    tls_ca_bundle: Path | None = None

    # Client-to-agent authorization.
    authz_source: AuthzSource | None = None
    authz_file: Path | None = None
    default_enforce_client_authz: bool = True

    # Rate limits: token buckets of N requests per window (0: no limit).
    rate_limit_window_seconds: float = Field(default=60.0, gt=0)
    rate_limit_session_per_client: int = Field(default=6000, ge=0)
    rate_limit_session_per_user: int = Field(default=60, ge=0)
    rate_limit_register_per_agent: int = Field(default=120, ge=0)
    # Rejected tokens are recorded per source address and kind of failure at most once a
    # window (the next record counts those left out), and at most this many a window
    # per process: an unauthenticated flood cannot grow the trail faster than that.
    audit_rejection_window_seconds: float = Field(default=60.0, gt=0)
    audit_rejections_per_window: int = Field(default=300, ge=1)
    # Tamper evidence (lkps.audit.keys, lkps.audit.checkpoints): the chain's HMAC key,
    # given as its text or as a file holding it (one of the two; required outside dev),
    # keys it replaced (files, comma-separated: they only verify), the Ed25519 private
    # key (PEM file) that signs checkpoints (required outside dev), and how often.
    audit_key: SecretStr = SecretStr("")
    audit_key_file: Path | None = None
    audit_previous_key_files: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    audit_signing_key: Path | None = None
    audit_checkpoint_seconds: float = Field(default=60.0, ge=1.0, le=86_400)
    # Shared state across replicas (rate-limit counters). Optional: without it each
    # replica limits on its own.
    redis_url: str = ""

    # Store.
    database_url: str = "sqlite+aiosqlite:///./var/lkps.db"
    database_timeout_seconds: float = Field(default=5.0, gt=0)
    # PostgreSQL connections per worker process (SQLite uses its own small pool).
    database_pool_size: int = Field(default=20, ge=1, le=200)

    # Rooms and lifetimes.
    room_max_participants: int = Field(default=2, ge=1, le=1000)
    participant_token_ttl: int = Field(default=900, ge=30, le=86_400)
    # Under a minute only makes sense in tests (the SDK renews at 80% of the lifetime).
    agent_token_ttl: int = Field(default=3600, ge=10, le=86_400)
    presence_ttl: int = Field(default=90, ge=5)
    heartbeat_interval: int = Field(default=30, ge=1)

    # Session lifecycle from LiveKit's webhooks (POST /api/livekit/webhook).
    # An agent not in the room this long after the client: session.agent_missing and
    # one re-dispatch.
    agent_join_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    # A webhook event whose created_at is further than this from LKPS's clock is refused.
    livekit_webhook_max_age_seconds: float = Field(default=300.0, ge=10, le=3600)
    # LiveKit's server API (Twirp) for the re-dispatch; empty: LKPS_LIVEKIT_URL as http(s).
    livekit_api_url: str = ""

    # How agents' workers reach LiveKit. "gateway": through LKPS's /agent, which binds
    # each worker connection to its agent, and presence is a live worker connection.
    # "direct": registration hands out a LiveKit worker token, and LiveKit lets its
    # holder register under ANY agent name, so one agent can take another's sessions
    # (issue 11, finding 3); presence is a register or heartbeat within the TTL.
    # `lkps dev` defaults to "direct" (docs/configuration.md).
    agent_connection: AgentConnection = "gateway"
    # The gateway's public ws(s):// URL; empty: the URL each register request came in on.
    agent_gateway_url: str = ""
    agent_gateway_register_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    agent_gateway_max_message_bytes: int = Field(default=1 << 20, ge=4096, le=64 << 20)
    # The load at/above which a worker cannot take a job: livekit-server's own
    # `agents.target_load` (default 0.7), which it applies whatever the worker thinks.
    # Keep the two equal: in gateway mode a session start answers 503 "at capacity"
    # when every connected worker of the agent is full or at/above it.
    livekit_agent_target_load: float = Field(default=0.7, gt=0, le=1)
    # Each replica's lease on its gateway connections, renewed every third of it: a
    # replica that dies (SIGKILL) stops counting for its workers within this time.
    agent_gateway_lease_seconds: float = Field(default=6.0, ge=1, le=60)

    # HTTP.
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65_535)
    workers: int = Field(default=1, ge=1, le=64)
    max_body_bytes: int = Field(default=65_536, ge=1024)
    # The request head (request line and headers), bounded while it is read: past a
    # limit the connection gets 431 and is closed (lkps.http).
    max_header_line_bytes: int = Field(default=16_384, ge=1024)
    max_header_total_bytes: int = Field(default=65_536, ge=4096)
    max_header_count: int = Field(default=100, ge=10)
    # uvicorn's HTTP/1.1 parser (uvicorn[standard], which LKPS requires, brings httptools).
    http_implementation: HttpImplementation = "httptools"
    # How long an idle client connection is kept open. Longer than what sits in front
    # (a load balancer's idle timeout, often 60 s) and than clients' own keep-alive
    # expiry (httpx: 5 s): the side that closes an idle connection must be the client,
    # or a request sent just as the server closes it is lost with no answer. uvicorn's
    # own default, 5 s, ties with httpx's and loses such requests under steady load.
    http_keep_alive_seconds: float = Field(default=75.0, gt=0)
    # Gateways whose X-Forwarded-For / X-Forwarded-Proto are believed (comma-separated IPs
    # or CIDRs; "*" trusts anyone, which only a private network may do). The audit's
    # client_ip is the first address not in this list.
    forwarded_allow_ips: str = "127.0.0.1"
    # Browser origins (pages on other sites) that may call the API: comma-separated exact
    # origins (lkps.origins). Empty: no CORS headers at all, as without a browser client.
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Prometheus metrics on their own port, bound to LKPS_METRICS_HOST (default: LKPS_HOST).
    metrics_port: int = Field(default=9464, ge=0, le=65_535)
    metrics_host: str = ""
    log_level: str = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Explicit values, then `LKPS_*` variables, then `LKPS_CONFIG_FILE` (YAML or
        JSON, keys as in the variable names without the prefix, e.g. `presence_ttl`)."""
        config_file = os.environ.get("LKPS_CONFIG_FILE")
        if not config_file:
            return (init_settings, env_settings)
        if not Path(config_file).is_file():
            raise ConfigurationError(f"LKPS_CONFIG_FILE {config_file} is not a readable file")
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls, config_file))

    @field_validator(
        "entra_audiences",
        "cwid_claims",
        "cors_allow_origins",
        "audit_previous_key_files",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("entra_tenant_id")
    @classmethod
    def _lowercase_tenant(cls, value: str) -> str:
        return value.strip().lower()

    @field_validator("entra_authority", "graph_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("agent_gateway_url")
    @classmethod
    def _websocket_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("ws://", "wss://")):
            raise ValueError("LKPS_AGENT_GATEWAY_URL must be a ws:// or wss:// URL")
        return value

    @property
    def is_dev(self) -> bool:
        return self.env == "dev"

    @property
    def jwks_url(self) -> str:
        if self.entra_jwks_url:
            return self.entra_jwks_url
        return f"{self.entra_authority}/{self.entra_tenant_id}/discovery/v2.0/keys"

    @property
    def accepted_issuers(self) -> frozenset[str]:
        """v2 and v1 issuers of the configured tenant (contract §1)."""
        tenant = self.entra_tenant_id
        return frozenset(
            {
                f"https://login.microsoftonline.com/{tenant}/v2.0",
                f"https://sts.windows.net/{tenant}/",
                f"{self.entra_authority}/{tenant}/v2.0",
            }
        )

    @property
    def effective_authz_source(self) -> AuthzSource:
        if self.authz_source is not None:
            return self.authz_source
        return "file" if self.is_dev else "graph"

    @property
    def effective_livekit_api_url(self) -> str:
        """Where LiveKit's server API answers: LKPS_LIVEKIT_API_URL, or the LiveKit URL
        with ws(s) turned into http(s)."""
        if self.livekit_api_url:
            return self.livekit_api_url
        url = self.livekit_url
        return "http" + url[2:] if url.startswith("ws") else url

    def cors_origins(self) -> AllowedOrigins:
        """The browser origins allowed to call the API; refuses entries that are not."""
        allowed, problems = parse_origins(self.cors_allow_origins, dev=self.is_dev)
        if problems:
            raise ConfigurationError("; ".join(problems))
        return allowed

    def check_servable(self) -> None:
        """Refuse a configuration that would run an insecure or broken service."""
        problems: list[str] = []
        required = {
            "LKPS_LIVEKIT_URL": self.livekit_url,
            "LKPS_LIVEKIT_API_KEY": self.livekit_api_key,
            "LKPS_LIVEKIT_API_SECRET": self.livekit_api_secret.get_secret_value(),
            "LKPS_ENTRA_TENANT_ID": self.entra_tenant_id,
        }
        problems += [f"{name} is required" for name, value in required.items() if not value]
        secret = self.livekit_api_secret.get_secret_value()
        if secret and len(secret) < 32 and not self.is_dev:
            problems.append("LKPS_LIVEKIT_API_SECRET must be at least 32 characters")
        if not self.entra_audiences:
            problems.append("LKPS_ENTRA_AUDIENCES is required")
        if not self.cwid_claims:
            problems.append("LKPS_CWID_CLAIMS must name at least one claim")
        if self.heartbeat_interval >= self.presence_ttl:
            problems.append("LKPS_HEARTBEAT_INTERVAL must be shorter than LKPS_PRESENCE_TTL")
        if self.effective_authz_source == "file" and self.authz_file is None:
            problems.append("LKPS_AUTHZ_FILE is required when LKPS_AUTHZ_SOURCE=file")
        if self.effective_authz_source == "graph":
            if not self.entra_client_id:
                problems.append("LKPS_ENTRA_CLIENT_ID is required when LKPS_AUTHZ_SOURCE=graph")
            if not (
                self.entra_client_secret.get_secret_value() or self.entra_client_certificate_path
            ):
                problems.append(
                    "LKPS_ENTRA_CLIENT_SECRET or LKPS_ENTRA_CLIENT_CERTIFICATE_PATH is required "
                    "when LKPS_AUTHZ_SOURCE=graph"
                )
        if self.metrics_port and self.metrics_port == self.port:
            problems.append("LKPS_METRICS_PORT must differ from LKPS_PORT")
        problems += parse_origins(self.cors_allow_origins, dev=self.is_dev)[1]
        if self.database_url.startswith("sqlite") and self.workers > 1:
            problems.append("SQLite serves one worker process; use PostgreSQL for LKPS_WORKERS>1")
        if not self.is_dev:
            if not (self.audit_key.get_secret_value() or self.audit_key_file):
                problems.append("LKPS_AUDIT_KEY or LKPS_AUDIT_KEY_FILE is required outside dev")
            if self.audit_signing_key is None:
                problems.append("LKPS_AUDIT_SIGNING_KEY is required outside dev")
            if self.entra_tenant_id == DEV_TENANT_ID:
                problems.append("the development tenant is only trusted with LKPS_ENV=dev")
            if DEV_JWKS_PATH in self.jwks_url or DEV_AUDIENCE in self.entra_audiences:
                problems.append(
                    "the development identity provider is only trusted with LKPS_ENV=dev"
                )
        if problems:
            raise ConfigurationError("; ".join(problems))
