"""Operator overrides of client authorization, and audit indexes for the audit API.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from lkps.store.types import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agent_authz_overrides",
        sa.Column("agent_id", sa.String(36), primary_key=True),
        sa.Column("enforce_client_authz", sa.Boolean),
        sa.Column("additional_clients", sa.Text, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(256), nullable=False),
    )
    op.create_index("ix_audit_records_client_app_id", "audit_records", ["client_app_id"])
    op.create_index("ix_audit_records_actor_cwid", "audit_records", ["actor_cwid"])


def downgrade() -> None:
    op.drop_index("ix_audit_records_actor_cwid", "audit_records")
    op.drop_index("ix_audit_records_client_app_id", "audit_records")
    op.drop_table("agent_authz_overrides")
