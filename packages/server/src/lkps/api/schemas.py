"""Request and response bodies, as the OpenAPI document shows them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool

from lkps.authorization.overrides import MAX_ADDITIONAL_CLIENTS
from lkps.sessions.metadata import MAX_KEYS, check_metadata

# A JSON object within the metadata limits (50 keys, 10,240 bytes, 32 levels). The
# document states the key limit; the size and depth limits have no JSON Schema keyword.
Metadata = Annotated[
    dict[str, Any],
    AfterValidator(check_metadata),
    Field(json_schema_extra={"maxProperties": MAX_KEYS}),
]


class ErrorBody(BaseModel):
    error: str = Field(description="Machine-readable error code")
    message: str = Field(description="What went wrong, for people")
    request_id: str = Field(description="Quote this when reporting a problem")


class HealthResponse(BaseModel):
    status: str
    version: str


class ReadinessResponse(BaseModel):
    status: str
    checks: dict[str, str]


class SessionStartRequest(BaseModel):
    agent_entra_app_id: uuid.UUID = Field(
        description="The target agent's Entra application (client) id"
    )
    metadata: Metadata | None = Field(
        default=None,
        description="Forwarded to the agent as its dispatch metadata (at most 50 keys, 10 KB)",
    )


class SessionStartResponse(BaseModel):
    room_name: str
    livekit_url: str
    participant_token: str
    session_id: str
    expires_at: datetime = Field(description="When the participant token expires")


class AgentRegisterRequest(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    enforce_client_authz: StrictBool | None = Field(
        default=None, description="Require clients to be pre-authorized (default: LKPS setting)"
    )
    version: str | None = Field(default=None, max_length=128)
    metadata: Metadata | None = None
    registration_id: uuid.UUID | None = Field(
        default=None, description="Renew this live registration instead of creating one"
    )
    worker_connected: StrictBool | None = Field(
        default=None,
        description=(
            "Whether the agent's worker is connected to LiveKit. false: registered but not "
            "present until a heartbeat says true (lkps-agent registers so, and reports every "
            "change). Omitted: a new registration is present at once; a renewal keeps its state."
        ),
    )


class AgentRegisterResponse(BaseModel):
    agent_name: str
    livekit_url: str
    token: str
    expires_at: datetime
    heartbeat_interval_seconds: int
    presence_ttl_seconds: int
    registration_id: str


class RegistrationRef(BaseModel):
    registration_id: uuid.UUID | None = None


class HeartbeatRequest(RegistrationRef):
    worker_connected: StrictBool | None = Field(
        default=None,
        description=(
            "Whether the agent's worker is connected to LiveKit now; sessions reach the "
            "registration only while it is. Omitted: unchanged."
        ),
    )


class HeartbeatResponse(BaseModel):
    connected: bool
    presence_expires_at: datetime


class OverrideBody(BaseModel):
    enforce_client_authz: StrictBool | None = Field(
        default=None, description="Force enforcement on or off; null follows the agent"
    )
    # Checked by `canonical_client_ids` (its messages are the API's), so only the
    # document states the UUID format and the limit.
    additional_clients: list[str] = Field(
        default_factory=list,
        description=(
            f"Client app ids (UUIDs) allowed on top of the source's list; "
            f"at most {MAX_ADDITIONAL_CLIENTS}"
        ),
        json_schema_extra={
            "items": {"type": "string", "format": "uuid"},
            "maxItems": MAX_ADDITIONAL_CLIENTS,
        },
    )


class OverrideResponse(BaseModel):
    agent_id: str
    enforce_client_authz: bool | None
    additional_clients: list[str]
    updated_at: datetime
    updated_by: str


class AgentInfo(BaseModel):
    agent_id: str
    present: bool
    enforce_client_authz: bool = Field(description="What session starts apply")
    registered_enforce_client_authz: bool = Field(description="What the agent registered with")
    override: OverrideResponse | None
    version: str | None
    first_registered_at: datetime
    last_registered_at: datetime
    last_heartbeat_at: datetime | None
    active_registrations: int = Field(description="Live registrations (worker processes)")
    connected_registrations: int = Field(
        description="Live registrations whose worker is connected to LiveKit: `present` when > 0"
    )


class AgentList(BaseModel):
    agents: list[AgentInfo]


class AuditPage(BaseModel):
    records: list[dict[str, Any]]
    next_cursor: str | None = Field(description="Pass back as `cursor` for older records")


class ChainReport(BaseModel):
    ok: bool
    records_checked: int
    head_seq: int
    broken_at_seq: int | None
    problem: str | None


class TokenSourceRequest(BaseModel):
    """LiveKit's `TokenSourceRequest`, as its client SDKs send it (snake_case JSON)."""

    room_name: str | None = None
    participant_identity: str | None = None
    participant_name: str | None = None
    participant_metadata: str | None = None
    participant_attributes: dict[str, str] | None = None
    room_config: dict[str, Any] | None = Field(
        default=None, description="Only `agents: [{agent_name, metadata}]` may be given"
    )


class TokenSourceResponse(BaseModel):
    server_url: str
    participant_token: str
    room_name: str
    session_id: str
    expires_at: datetime
