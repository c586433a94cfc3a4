"""Agents, their registrations, and the hash-chained audit trail.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from lkps.store.types import UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS_HASH = "0" * 64


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("agent_id", sa.String(36), primary_key=True),
        sa.Column("enforce_client_authz", sa.Boolean, nullable=False),
        sa.Column("version", sa.String(128)),
        sa.Column("metadata_json", sa.Text),
        sa.Column("first_registered_at", UTCDateTime(), nullable=False),
        sa.Column("last_registered_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "agent_registrations",
        sa.Column("registration_id", sa.String(36), primary_key=True),
        sa.Column("agent_id", sa.String(36), sa.ForeignKey("agents.agent_id"), nullable=False),
        sa.Column("version", sa.String(128)),
        sa.Column("registered_at", UTCDateTime(), nullable=False),
        sa.Column("renewed_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime()),
        sa.Column("end_reason", sa.String(32)),
    )
    op.create_index(
        "ix_agent_registrations_agent_expires", "agent_registrations", ["agent_id", "expires_at"]
    )
    op.create_table(
        "audit_records",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("record_id", sa.String(36), nullable=False, unique=True),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("request_id", sa.String(64)),
        sa.Column("actor_tenant_id", sa.String(64)),
        sa.Column("actor_object_id", sa.String(64)),
        sa.Column("actor_cwid", sa.String(256)),
        sa.Column("client_app_id", sa.String(64)),
        sa.Column("agent_id", sa.String(64)),
        sa.Column("room_name", sa.String(512)),
        sa.Column("registration_id", sa.String(36)),
        sa.Column("client_ip", sa.String(64)),
        sa.Column("details", sa.Text),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_records_occurred_at", "audit_records", ["occurred_at"])
    op.create_index("ix_audit_records_agent_id", "audit_records", ["agent_id"])
    op.create_index("ix_audit_records_event", "audit_records", ["event"])
    chain_head = op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(chain_head, [{"id": 1, "seq": 0, "hash": GENESIS_HASH}])
    _forbid_audit_changes()


def _forbid_audit_changes() -> None:
    """Refuse UPDATE and DELETE on audit records at the database itself."""
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_records_no_{action.lower()} BEFORE {action} "
                "ON audit_records BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END"
            )
    elif dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION lkps_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'audit records are append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE ON audit_records "
            "FOR EACH ROW EXECUTE FUNCTION lkps_audit_append_only()"
        )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_records_append_only ON audit_records")
        op.execute("DROP FUNCTION IF EXISTS lkps_audit_append_only()")
    op.drop_table("audit_chain_head")
    op.drop_table("audit_records")
    op.drop_table("agent_registrations")
    op.drop_table("agents")
