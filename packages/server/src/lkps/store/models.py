"""Tables. Changing one means adding an Alembic revision under `migrations/versions`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from lkps.store.types import PortableString, PortableText, UTCDateTime


class Base(DeclarativeBase):
    """Columns use the portable types: what is read back is exactly what was written,
    on either engine (the audit hash chain depends on it). The DDL is the migrations'."""

    type_annotation_map = {datetime: UTCDateTime()}


class AgentRow(Base):
    """One row per agent app id; what the latest registration said about the agent."""

    __tablename__ = "agents"

    agent_id: Mapped[str] = mapped_column(PortableString(36), primary_key=True)
    enforce_client_authz: Mapped[bool] = mapped_column(Boolean)
    version: Mapped[str | None] = mapped_column(PortableString(128))
    metadata_json: Mapped[str | None] = mapped_column(PortableText())
    first_registered_at: Mapped[datetime]
    last_registered_at: Mapped[datetime]


class RegistrationRow(Base):
    """One running worker process of an agent. Live while `ended_at` is null and
    `expires_at` is in the future; sessions reach it only while `worker_connected` too
    (the agent says whether its worker is connected to LiveKit; one that never says is)."""

    __tablename__ = "agent_registrations"
    __table_args__ = (Index("ix_agent_registrations_agent_expires", "agent_id", "expires_at"),)

    registration_id: Mapped[str] = mapped_column(PortableString(36), primary_key=True)
    agent_id: Mapped[str] = mapped_column(PortableString(36), ForeignKey("agents.agent_id"))
    version: Mapped[str | None] = mapped_column(PortableString(128))
    registered_at: Mapped[datetime]
    renewed_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(PortableString(32))
    worker_connected: Mapped[bool] = mapped_column(default=True, server_default=true())


class AuditRecordRow(Base):
    """Append-only: database triggers refuse UPDATE and DELETE; the hash chain shows
    any change made around them."""

    __tablename__ = "audit_records"
    __table_args__ = (
        Index("ix_audit_records_occurred_at", "occurred_at"),
        Index("ix_audit_records_agent_id", "agent_id"),
        Index("ix_audit_records_event", "event"),
        Index("ix_audit_records_client_app_id", "client_app_id"),
        Index("ix_audit_records_actor_cwid", "actor_cwid"),
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    record_id: Mapped[str] = mapped_column(PortableString(36), unique=True)
    occurred_at: Mapped[datetime]
    event: Mapped[str] = mapped_column(PortableString(64))
    outcome: Mapped[str] = mapped_column(PortableString(16))
    status: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(PortableText())
    request_id: Mapped[str | None] = mapped_column(PortableString(64))
    actor_tenant_id: Mapped[str | None] = mapped_column(PortableString(64))
    actor_object_id: Mapped[str | None] = mapped_column(PortableString(64))
    actor_cwid: Mapped[str | None] = mapped_column(PortableString(256))
    client_app_id: Mapped[str | None] = mapped_column(PortableString(64))
    agent_id: Mapped[str | None] = mapped_column(PortableString(64))
    room_name: Mapped[str | None] = mapped_column(PortableString(512))
    registration_id: Mapped[str | None] = mapped_column(PortableString(36))
    client_ip: Mapped[str | None] = mapped_column(PortableString(64))
    details: Mapped[str | None] = mapped_column(PortableText())
    prev_hash: Mapped[str] = mapped_column(PortableString(64))
    hash: Mapped[str] = mapped_column(PortableString(64))
    # The audit key that chained the record (null: chained before keys, plain SHA-256).
    key_id: Mapped[str | None] = mapped_column(PortableString(16))


# The longest text each bounded audit column stores, in characters.
AUDIT_TEXT_LIMITS: dict[str, int] = {
    column.key: length
    for column in AuditRecordRow.__table__.columns
    if isinstance(length := getattr(column.type, "length", None), int)
}


class AuditChainHead(Base):
    """The single row every audit writer locks: the last sequence number and hash."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(PortableString(64))


class AuditCheckpointRow(Base):
    """A signed checkpoint of the chain head (lkps.audit.checkpoints). The signature,
    not the table, protects it: a copy also goes to the log stream."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(PortableString(64))
    time: Mapped[datetime]
    key_id: Mapped[str | None] = mapped_column(PortableString(16))
    signer: Mapped[str] = mapped_column(PortableString(16))
    signature: Mapped[str] = mapped_column(PortableString(128))


class AuthorizationOverrideRow(Base):
    """What an operator decided about an agent's client authorization, over what the
    agent's registration and the authorization source say."""

    __tablename__ = "agent_authz_overrides"

    agent_id: Mapped[str] = mapped_column(PortableString(36), primary_key=True)
    # None: follow the agent's registration.
    enforce_client_authz: Mapped[bool | None] = mapped_column(Boolean)
    # JSON list of lower-case client app ids allowed on top of the source's list.
    additional_clients: Mapped[str] = mapped_column(PortableText())
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(PortableString(256))


class SessionRow(Base):
    """One granted session, followed through LiveKit's webhooks: granted → client joined
    → agent joined → ended. Each step's column is set once (the first event that tells
    wins), so repeated and out-of-order events change nothing twice, on any replica."""

    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_agent_granted", "agent_id", "granted_at"),
        Index("ix_sessions_granted_at", "granted_at"),
        Index("ix_sessions_state_joined", "state", "client_joined_at"),
    )

    # What LiveKit's events and the caller's claims fill is TEXT: no value of theirs can
    # fail a write (the grant's rows are written with its audit record, in batches).
    session_id: Mapped[str] = mapped_column(PortableString(36), primary_key=True)
    room_name: Mapped[str] = mapped_column(PortableText(), unique=True)
    agent_id: Mapped[str] = mapped_column(PortableString(36))
    state: Mapped[str] = mapped_column(PortableString(16))
    via: Mapped[str] = mapped_column(PortableString(16))
    actor_tenant_id: Mapped[str | None] = mapped_column(PortableString(64))
    actor_object_id: Mapped[str | None] = mapped_column(PortableString(64))
    actor_cwid: Mapped[str] = mapped_column(PortableText())
    client_app_id: Mapped[str] = mapped_column(PortableString(64))
    app_only: Mapped[bool] = mapped_column(Boolean)
    # The dispatch metadata as the agent received it: a re-dispatch sends the same.
    dispatch_metadata: Mapped[str] = mapped_column(PortableText())
    granted_at: Mapped[datetime]
    room_sid: Mapped[str | None] = mapped_column(PortableText())
    client_identity: Mapped[str | None] = mapped_column(PortableText())
    client_sid: Mapped[str | None] = mapped_column(PortableText())
    client_joined_at: Mapped[datetime | None]
    agent_identity: Mapped[str | None] = mapped_column(PortableText())
    agent_sid: Mapped[str | None] = mapped_column(PortableText())
    job_id: Mapped[str | None] = mapped_column(PortableText())
    agent_joined_at: Mapped[datetime | None]
    # No-show handling: 0 none, 1 agent missing and re-dispatched, 2 missing after that.
    no_show_stage: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    agent_missing_at: Mapped[datetime | None]
    redispatch_id: Mapped[str | None] = mapped_column(PortableText())
    ended_at: Mapped[datetime | None]
    # The last state reached before the end (how far the session got).
    final_state: Mapped[str | None] = mapped_column(PortableString(16))
    reopened_at: Mapped[datetime | None]
    reopened_room_sid: Mapped[str | None] = mapped_column(PortableText())


class GatewayReplicaRow(Base):
    """One running LKPS process that serves the agent gateway. Its worker connections
    count only while `lease_expires_at` is in the future: the replica renews it every
    few seconds, so one that dies without a word (SIGKILL) stops counting when it lapses."""

    __tablename__ = "gateway_replicas"

    replica_id: Mapped[str] = mapped_column(PortableString(64), primary_key=True)
    started_at: Mapped[datetime]
    lease_expires_at: Mapped[datetime]


class WorkerConnectionRow(Base):
    """One agent worker's open connection through a replica's gateway, and the last
    status it reported (as far as it was worth writing: see `lkps.gateway.live`)."""

    __tablename__ = "worker_connections"
    __table_args__ = (
        Index("ix_worker_connections_agent", "agent_id"),
        Index("ix_worker_connections_replica", "replica_id"),
    )

    connection_id: Mapped[str] = mapped_column(PortableString(32), primary_key=True)
    agent_id: Mapped[str] = mapped_column(PortableString(36))
    registration_id: Mapped[str] = mapped_column(PortableString(36))
    replica_id: Mapped[str] = mapped_column(PortableString(64))
    # LiveKit's id for the worker, once its RegisterWorkerResponse came back.
    worker_id: Mapped[str | None] = mapped_column(PortableString(64))
    connected_at: Mapped[datetime]
    registered: Mapped[bool] = mapped_column(Boolean)
    # LiveKit's WS_AVAILABLE (False: WS_FULL), the load in [0, 1] and the running jobs.
    available: Mapped[bool] = mapped_column(Boolean)
    load: Mapped[float] = mapped_column(Float)
    job_count: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime]
