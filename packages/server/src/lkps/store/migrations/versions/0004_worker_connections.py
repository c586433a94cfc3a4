"""Live agent worker connections through the gateway, and the replicas that hold them.

In gateway mode an agent is present while one of its workers holds a registered
connection through some replica whose lease is alive; the row carries the status the
worker last reported, for capacity (503 when every worker is full).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from lkps.store.types import UTCDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gateway_replicas",
        sa.Column("replica_id", sa.String(64), primary_key=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "worker_connections",
        sa.Column("connection_id", sa.String(32), primary_key=True),
        sa.Column("agent_id", sa.String(36), nullable=False),
        sa.Column("registration_id", sa.String(36), nullable=False),
        sa.Column("replica_id", sa.String(64), nullable=False),
        sa.Column("worker_id", sa.String(64)),
        sa.Column("connected_at", UTCDateTime(), nullable=False),
        sa.Column("registered", sa.Boolean, nullable=False),
        sa.Column("available", sa.Boolean, nullable=False),
        sa.Column("load", sa.Float, nullable=False),
        sa.Column("job_count", sa.Integer, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_worker_connections_agent", "worker_connections", ["agent_id"])
    op.create_index("ix_worker_connections_replica", "worker_connections", ["replica_id"])


def downgrade() -> None:
    op.drop_index("ix_worker_connections_replica", "worker_connections")
    op.drop_index("ix_worker_connections_agent", "worker_connections")
    op.drop_table("worker_connections")
    op.drop_table("gateway_replicas")
