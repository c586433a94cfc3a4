"""Authorization override queries."""

from __future__ import annotations

import json

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from lkps.authorization.override import AuthorizationOverride
from lkps.store.models import AuthorizationOverrideRow
from lkps.store.upsert import upsert


def decode_clients(raw: str | None) -> tuple[str, ...]:
    return tuple(json.loads(raw)) if raw else ()


def _to_override(row: AuthorizationOverrideRow) -> AuthorizationOverride:
    return AuthorizationOverride(
        row.agent_id,
        row.enforce_client_authz,
        decode_clients(row.additional_clients),
        row.updated_at,
        row.updated_by,
    )


async def get_override(session: AsyncSession, agent_id: str) -> AuthorizationOverride | None:
    row = await session.get(AuthorizationOverrideRow, agent_id)
    return None if row is None else _to_override(row)


async def put_override(session: AsyncSession, override: AuthorizationOverride) -> None:
    values = {
        "agent_id": override.agent_id,
        "enforce_client_authz": override.enforce_client_authz,
        "additional_clients": json.dumps(list(override.additional_clients)),
        "updated_at": override.updated_at,
        "updated_by": override.updated_by,
    }
    changes = {k: v for k, v in values.items() if k != "agent_id"}
    await upsert(session, AuthorizationOverrideRow, "agent_id", values, changes)


async def delete_override(session: AsyncSession, agent_id: str) -> bool:
    result = await session.execute(
        delete(AuthorizationOverrideRow)
        .where(AuthorizationOverrideRow.agent_id == agent_id)
        .returning(AuthorizationOverrideRow.agent_id)
    )
    return result.first() is not None


async def all_overrides(session: AsyncSession) -> dict[str, AuthorizationOverride]:
    rows = (await session.execute(select(AuthorizationOverrideRow))).scalars()
    return {row.agent_id: _to_override(row) for row in rows}
