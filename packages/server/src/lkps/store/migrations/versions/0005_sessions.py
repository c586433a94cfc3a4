"""Sessions followed through LiveKit's webhooks (granted → client joined → agent joined
→ ended), one row per granted session.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from lkps.store.types import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("session_id", sa.String(36), primary_key=True),
        sa.Column("room_name", sa.Text, nullable=False, unique=True),
        sa.Column("agent_id", sa.String(36), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("actor_tenant_id", sa.String(64)),
        sa.Column("actor_object_id", sa.String(64)),
        sa.Column("actor_cwid", sa.Text, nullable=False),
        sa.Column("client_app_id", sa.String(64), nullable=False),
        sa.Column("app_only", sa.Boolean, nullable=False),
        sa.Column("dispatch_metadata", sa.Text, nullable=False),
        sa.Column("granted_at", UTCDateTime(), nullable=False),
        sa.Column("room_sid", sa.Text),
        sa.Column("client_identity", sa.Text),
        sa.Column("client_sid", sa.Text),
        sa.Column("client_joined_at", UTCDateTime()),
        sa.Column("agent_identity", sa.Text),
        sa.Column("agent_sid", sa.Text),
        sa.Column("job_id", sa.Text),
        sa.Column("agent_joined_at", UTCDateTime()),
        sa.Column("no_show_stage", sa.Integer, nullable=False, server_default="0"),
        sa.Column("agent_missing_at", UTCDateTime()),
        sa.Column("redispatch_id", sa.Text),
        sa.Column("ended_at", UTCDateTime()),
        sa.Column("final_state", sa.String(16)),
        sa.Column("reopened_at", UTCDateTime()),
        sa.Column("reopened_room_sid", sa.Text),
    )
    op.create_index("ix_sessions_agent_granted", "sessions", ["agent_id", "granted_at"])
    op.create_index("ix_sessions_granted_at", "sessions", ["granted_at"])
    op.create_index("ix_sessions_state_joined", "sessions", ["state", "client_joined_at"])


def downgrade() -> None:
    op.drop_table("sessions")
