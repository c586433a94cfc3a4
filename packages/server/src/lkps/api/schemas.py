"""Request and response bodies, as the OpenAPI document shows them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from lkps.api.body import JsonText
from lkps.authorization.override import MAX_ADDITIONAL_CLIENTS
from lkps.ids import UUID_PATTERN, canonical_uuid
from lkps.sessions.metadata import (
    MAX_KEYS,
    ClientMetadata,
    NotJsonObject,
    check_metadata,
    client_metadata,
    parse_client_metadata,
)

# A JSON object within the metadata limits (50 keys, 10,240 bytes, 32 levels). The
# document states the key limit; the size and depth limits have no JSON Schema keyword.
Metadata = Annotated[
    dict[str, Any],
    AfterValidator(check_metadata),
    Field(json_schema_extra={"maxProperties": MAX_KEYS}),
]


def _session_metadata(value: Any, info: ValidationInfo) -> ClientMetadata | None:
    """The metadata as its text: `read_json_body(..., json_text=["metadata"])` gives it.
    Anything else (a value without its text) is refused rather than re-encoded."""
    field = info.field_name or "metadata"
    if isinstance(value, JsonText):
        return (
            None if value.value is None else client_metadata(value.value, value.text, field=field)
        )
    if value is None:
        return None
    raise ValueError(f'"{field}" must be a JSON object')


# What the agent receives as its dispatch metadata: the client's JSON object as sent,
# compacted (`lkps.sessions.metadata`). The document shows the object it must be.
SessionMetadata = Annotated[
    ClientMetadata | None,
    BeforeValidator(_session_metadata),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "object", "additionalProperties": True, "maxProperties": MAX_KEYS},
                {"type": "null"},
            ]
        }
    ),
]


def _canonical_uuid(value: Any) -> Any:
    if isinstance(value, uuid.UUID):  # given by Python code, not read from a request
        return value
    if canonical_uuid(value) is None:
        raise PydanticCustomError("uuid_parsing", "Input should be a UUID")
    return value


# Every id LKPS reads (agent, registration): the canonical hyphenated UUID, either case
# (`lkps.ids`), refused otherwise as `"<field>" must be a UUID`; `str()` gives it in lower
# case. A type of its own so that bodies, paths and queries agree, and say so in the
# document (`format: uuid` and the pattern).
_UUID_SCHEMA = WithJsonSchema({"type": "string", "format": "uuid", "pattern": UUID_PATTERN})
CanonicalUuid = Annotated[uuid.UUID, BeforeValidator(_canonical_uuid), _UUID_SCHEMA]
AgentId = CanonicalUuid


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
    agent_entra_app_id: AgentId = Field(
        description="The target agent's Entra application (client) id"
    )
    metadata: SessionMetadata = Field(
        default=None,
        description=(
            "Forwarded to the agent as its dispatch metadata, as sent but for the whitespace "
            "between tokens (at most 50 keys, 10 KB; a key twice in one object is refused)"
        ),
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
    registration_id: CanonicalUuid | None = Field(
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
    # Gateway mode only (absent in direct mode): `token` is then a gateway credential.
    agent_connection: Literal["gateway"] | None = Field(
        default=None,
        description=(
            '"gateway": connect the worker to `gateway_url` + "/agent" with `token`; '
            "join rooms at `livekit_url`. Absent: connect to `livekit_url` with `token`."
        ),
    )
    gateway_url: str | None = Field(
        default=None, description="Where the worker's /agent socket connects (ws:// or wss://)."
    )


class RegistrationRef(BaseModel):
    registration_id: CanonicalUuid | None = None


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
            "items": {"type": "string", "format": "uuid", "pattern": UUID_PATTERN},
            "maxItems": MAX_ADDITIONAL_CLIENTS,
        },
    )


class OverrideResponse(BaseModel):
    agent_id: str
    enforce_client_authz: bool | None
    additional_clients: list[str]
    updated_at: datetime
    updated_by: str


class ConnectedWorkerInfo(BaseModel):
    """One worker connected through the agent gateway (gateway mode)."""

    replica_id: str = Field(description="The LKPS replica holding the connection")
    worker_id: str | None = Field(description="LiveKit's worker id, once it registered")
    registration_id: str
    connected_at: datetime
    registered: bool = Field(description="LiveKit answered its register: it can get jobs")
    status: Literal["available", "full"] = Field(
        description="`full`: it reported WS_FULL or a load at/above "
        "LKPS_LIVEKIT_AGENT_TARGET_LOAD, so LiveKit offers it no job"
    )
    load: float = Field(description="The load it last reported, 0 to 1")
    job_count: int = Field(description="Jobs it last reported running")
    updated_at: datetime = Field(description="When LKPS last recorded its status")


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
        description="Live registrations whose worker is connected to LiveKit: `present` "
        "when > 0 (direct mode)"
    )
    workers: list[ConnectedWorkerInfo] = Field(
        default_factory=list,
        description="Workers connected through the agent gateway on a live replica; "
        "`present` when one is registered (gateway mode; empty in direct mode)",
    )


class AgentList(BaseModel):
    agents: list[AgentInfo]


class AuditRecordModel(BaseModel):
    """One record of the hash-chained trail, as `lkps.audit.AuditRecord` stores it
    (tests/unit/audit/test_record_shape.py keeps the two alike)."""

    seq: int = Field(description="Position in the chain, from 1, without gaps")
    record_id: str
    occurred_at: datetime
    event: str = Field(description="`session.start`, `agent.register`, ... (docs/api.md)")
    outcome: str = Field(description="`granted`, `denied` or `recorded` (LKPS's own events)")
    status: int = Field(description="The HTTP status the caller saw (0 for LKPS's own events)")
    reason: str | None
    request_id: str | None
    actor_tenant_id: str | None
    actor_object_id: str | None
    actor_cwid: str | None
    client_app_id: str | None
    agent_id: str | None
    room_name: str | None
    registration_id: str | None
    client_ip: str | None
    details: dict[str, Any]
    prev_hash: str = Field(description="The previous record's `hash` (64 zeros for the first)")
    hash: str = Field(
        description="HMAC-SHA256 (under the audit key named by `key_id`; plain SHA-256 "
        "for records chained before keys) over this record's canonical JSON and `prev_hash`"
    )
    key_id: str | None = Field(
        default=None, description="Id of the audit key that chained the record (null: unkeyed)"
    )


class AuditPage(BaseModel):
    records: list[AuditRecordModel]
    next_cursor: str | None = Field(description="Pass back as `cursor` for older records")


class CheckpointModel(BaseModel):
    """A signed checkpoint of the chain head (docs/audit.md, "Signed checkpoints")."""

    seq: int = Field(description="The chain head's sequence number when signed")
    hash: str = Field(description="The chain head's hash when signed")
    time: str = Field(description="When it was signed (UTC, microseconds)")
    key_id: str | None = Field(description="The audit key this replica chains with")
    signer: str = Field(description="First 16 hex digits of SHA-256 of the Ed25519 public key")
    signature: str = Field(description="Ed25519 signature, base64url without padding")


class CheckpointList(BaseModel):
    checkpoints: list[CheckpointModel]


class ChainReport(BaseModel):
    ok: bool
    records_checked: int
    head_seq: int
    broken_at_seq: int | None
    problem: str | None


# LiveKit's standard token endpoint (`POST /api/session/token`). LKPS chooses the room,
# the participant and the room configuration; all a client names is the agent, in
# `room_config.agents[0]`. Each rule is stated twice, side by side: as the JSON Schema
# keyword the document shows, and as the validator that refuses what the keyword excludes
# with a message saying why (pydantic's own would say "at most 0 characters", or name the
# dispatch `room_config.agents.0`). The fuzzer holds the two to each other.

_AGENTS = "room_config.agents"
_DISPATCH = f"{_AGENTS}[0]"


def _left_to_lkps(value: str | None, info: ValidationInfo) -> str | None:
    if value:
        raise ValueError(f'"{info.field_name}" is chosen by LKPS and cannot be requested')
    return value


def _no_attributes(value: dict[str, str] | None) -> dict[str, str] | None:
    if value:
        raise ValueError('"participant_attributes" cannot be requested')
    return value


def _exactly_one_agent(value: Any) -> Any:
    if not isinstance(value, list) or len(value) != 1:
        raise ValueError(f'"{_AGENTS}" must name exactly one agent')
    return value


def _agent_app_id(value: Any) -> Any:
    if canonical_uuid(value) is None:
        raise ValueError(f'"{_DISPATCH}.agent_name" must be the agent\'s app id (a UUID)')
    return value


def _metadata_object(value: Any) -> ClientMetadata | None:
    """LiveKit carries dispatch metadata as a string; LKPS takes the JSON object
    `/api/session/start` takes, in that string (empty: none), within the same limits,
    and forwards it as `/api/session/start` does: the string, compacted."""
    if value is None or value == "":
        return None
    field = f"{_DISPATCH}.metadata"
    refusal = f'"{field}" must be a JSON object, as a string'
    if not isinstance(value, str):
        raise ValueError(refusal)
    try:
        return parse_client_metadata(value, field=field)
    except NotJsonObject:
        raise ValueError(refusal) from None


ChosenByLkps = Annotated[
    str | None,
    AfterValidator(_left_to_lkps),
    Field(description="Chosen by LKPS: absent, null or empty", json_schema_extra={"maxLength": 0}),
]


class _DeclaredKeysOnly(BaseModel):
    """A JSON object of its declared keys only (`additionalProperties: false`). A key it
    does not declare, or a required one missing, is refused by its whole path as LiveKit
    writes it (`room_config.agents[0].agent_name`), saying why, where pydantic would say
    "Extra inputs are not permitted" of `room_config.agents.0.agent_name`."""

    model_config = ConfigDict(extra="forbid")

    PATH: ClassVar[str]
    UNDECLARED: ClassVar[str] = "cannot be requested"

    @model_validator(mode="before")
    @classmethod
    def _declared_keys_only(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError(f'"{cls.PATH}" must be a JSON object')
        for key in data:
            if key not in cls.model_fields:
                raise ValueError(f'"{cls.PATH}.{key}" {cls.UNDECLARED}')
        for name, field in cls.model_fields.items():
            if field.is_required() and name not in data:
                raise ValueError(f'"{cls.PATH}.{name}" is required')
        return data


class AgentDispatchRequest(_DeclaredKeysOnly):
    """`room_config.agents[0]`: the agent, and what it gets as its dispatch metadata."""

    PATH = _DISPATCH
    UNDECLARED = 'cannot be requested (a dispatch takes "agent_name" and "metadata")'

    # `AgentId`'s rule and schema, with a message naming the dispatch as LiveKit writes it.
    agent_name: Annotated[
        uuid.UUID,
        BeforeValidator(_agent_app_id),
        _UUID_SCHEMA,
        Field(description="The agent's Entra application (client) id"),
    ]
    # Read as the object it holds; the document shows the string LiveKit sends. That the
    # string holds a JSON object of at most 50 keys is an annotation (`contentSchema`):
    # JSON Schema cannot require it of a string, nor the size and depth limits.
    metadata: Annotated[
        ClientMetadata | None,
        BeforeValidator(_metadata_object),
        WithJsonSchema(
            {
                "anyOf": [
                    {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {"type": "object", "maxProperties": MAX_KEYS},
                    },
                    {"type": "null"},
                ]
            }
        ),
        Field(
            description=(
                "Forwarded to the agent: a JSON object as a string (at most 50 keys, 10 KB); "
                "empty or null: none"
            )
        ),
    ] = None


class RoomConfigRequest(_DeclaredKeysOnly):
    """LiveKit's `RoomConfiguration`, of which a client may give only the one agent."""

    PATH = "room_config"
    UNDECLARED = "is chosen by LKPS and cannot be requested"

    agents: Annotated[
        list[AgentDispatchRequest],
        Field(min_length=1, max_length=1),
        BeforeValidator(_exactly_one_agent),
    ]


# Only snake_case inside `room_config`, and no field given at its default value: protobuf
# JSON would also take `agentName` or `"max_participants": 0`, but a schema admitting every
# such spelling of every RoomConfiguration field would be long and follow each LiveKit
# release. The SDKs never send them (JS: `toJsonString({useProtoFieldName: true})`,
# Android: snake_case without nulls), so they are refused like any field LKPS chooses.
class TokenSourceRequest(BaseModel):
    """LiveKit's `TokenSourceRequest`, as its client SDKs send it (snake_case JSON, fields
    at their default value left out). LKPS chooses the room, the participant and the room
    configuration: name the agent in `room_config.agents[0].agent_name`, nothing else
    (`agentName`, or a room setting at its default value, is refused too). Other top-level
    keys are ignored."""

    room_name: ChosenByLkps = None
    participant_identity: ChosenByLkps = None
    participant_name: ChosenByLkps = None
    participant_metadata: ChosenByLkps = None
    participant_attributes: Annotated[
        dict[str, str] | None,
        AfterValidator(_no_attributes),
        Field(
            description="Chosen by LKPS: absent, null or {}", json_schema_extra={"maxProperties": 0}
        ),
    ] = None
    room_config: RoomConfigRequest = Field(
        description="Names the agent; LKPS chooses the rest of the room configuration"
    )


class TokenSourceResponse(BaseModel):
    server_url: str
    participant_token: str
    room_name: str
    session_id: str
    expires_at: datetime


# Sessions followed through LiveKit's webhooks (GET /api/sessions, /api/sessions/{id}).


class SessionStep(BaseModel):
    step: str = Field(
        description="granted, client_joined, agent_joined, agent_missing, ended, reopened"
    )
    at: datetime


class SessionView(BaseModel):
    session_id: str
    room_name: str
    agent_id: str
    state: str = Field(description="granted, client_joined, agent_joined, ended or reopened")
    final_state: str | None = Field(description="How far an ended session got")
    via: str
    cwid: str
    client_app_id: str
    app_only: bool
    granted_at: datetime
    client_joined_at: datetime | None
    agent_joined_at: datetime | None
    ended_at: datetime | None
    duration_seconds: float | None = Field(description="From the client's join to the end")
    room_sid: str | None
    client_identity: str | None
    client_sid: str | None
    agent_identity: str | None
    agent_sid: str | None
    job_id: str | None
    agent_missing_at: datetime | None
    redispatched: bool
    redispatch_id: str | None
    reopened_at: datetime | None
    reopened_room_sid: str | None
    steps: list[SessionStep]


class SessionList(BaseModel):
    sessions: list[SessionView]


class WebhookAnswer(BaseModel):
    applied: bool = Field(description="Whether the event moved a session on")
