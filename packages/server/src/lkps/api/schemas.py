"""Request and response bodies, as the OpenAPI document shows them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lkps.sessions.metadata import check_metadata


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
    metadata: dict[str, Any] | None = Field(
        default=None,
        description="Forwarded to the agent as its dispatch metadata (at most 50 keys, 10 KB)",
    )

    @field_validator("metadata")
    @classmethod
    def _limits(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_metadata(value)


class SessionStartResponse(BaseModel):
    room_name: str
    livekit_url: str
    participant_token: str
    session_id: str
    expires_at: datetime = Field(description="When the participant token expires")


class AgentRegisterRequest(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    enforce_client_authz: bool | None = Field(
        default=None, description="Require clients to be pre-authorized (default: LKPS setting)"
    )
    version: str | None = Field(default=None, max_length=128)
    metadata: dict[str, Any] | None = None
    registration_id: uuid.UUID | None = Field(
        default=None, description="Renew this live registration instead of creating one"
    )

    @field_validator("metadata")
    @classmethod
    def _limits(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_metadata(value)


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


class HeartbeatResponse(BaseModel):
    connected: bool
    presence_expires_at: datetime
