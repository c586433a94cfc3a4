"""A granted session's row is stored by the audit writer's statement (one per engine),
which names its columns once: the grant must fill exactly those, each a real column."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lkps.sessions.records import SessionGrant, SessionState
from lkps.store.audit import GRANTED_SESSION_COLUMNS
from lkps.store.models import SessionRow

pytestmark = pytest.mark.unit


def grant() -> SessionGrant:
    return SessionGrant(
        session_id="9b2f6f0e-3c1d-4d7e-9a51-0c7a1b2c3d4e",
        room_name="room",
        agent_id="agent",
        via="session",
        actor_tenant_id="tid",
        actor_object_id="oid",
        actor_cwid="alice",
        client_app_id="client",
        app_only=False,
        dispatch_metadata="{}",
        granted_at=datetime(2026, 12, 6, tzinfo=UTC),
    )


def test_the_grant_fills_the_columns_the_writer_stores() -> None:
    row = grant().row()
    assert tuple(row) == GRANTED_SESSION_COLUMNS
    assert set(row) <= set(SessionRow.__table__.columns.keys())
    assert row["state"] == SessionState.GRANTED.value and row["no_show_stage"] == 0


def test_every_required_column_is_filled_at_the_grant() -> None:
    required = {
        column.name
        for column in SessionRow.__table__.columns
        if not column.nullable and column.server_default is None
    }
    assert required <= set(GRANTED_SESSION_COLUMNS)
