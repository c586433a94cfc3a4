"""Registrations say whether the agent's worker is connected to LiveKit.

A registration made before its worker reaches LiveKit (or while the worker reconnects)
is live but not dispatchable: a session started then would be dispatched to nobody, and
LiveKit drops such jobs silently. Existing rows, and agents that never say, count as
connected, as before.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "agent_registrations",
        sa.Column("worker_connected", sa.Boolean, nullable=False, server_default=sa.true()),
    )


def downgrade() -> None:
    with op.batch_alter_table("agent_registrations") as table:
        table.drop_column("worker_connected")
