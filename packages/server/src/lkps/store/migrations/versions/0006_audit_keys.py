"""Keyed audit chain: each record names the audit key that chained it; signed
checkpoints of the chain head.

Records chained before this revision keep no key id (their links stay plain SHA-256).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from lkps.store.types import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit_records", sa.Column("key_id", sa.String(16)))
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("time", UTCDateTime(), nullable=False),
        sa.Column("key_id", sa.String(16)),
        sa.Column("signer", sa.String(16), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
    # A plain ALTER (SQLite 3.35 and later, PostgreSQL): a batch copy of the table would
    # drop the append-only triggers with it. Keyed records no longer verify after this.
    op.execute("ALTER TABLE audit_records DROP COLUMN key_id")
