"""`GET /api/audit/checkpoints`: signed checkpoints of the chain head, for auditors;
taken by a background job, at shutdown, and copied to the log stream."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from lkps.audit import AuditEvent, AuditLog
from lkps.audit.checkpoints import Checkpoint, load_public_key
from lkps.config import Settings
from lkps.services import running_services
from lkps.store import Database
from tests.audit_keys import public_path
from tests.backends import StoreSql
from tests.conftest import CLIENT_B, Lkps

pytestmark = pytest.mark.api


def auditor(lkps: Lkps) -> str:
    return lkps.user_token("ops.auditor", roles=["LKPS.Auditor"])


async def checkpoints(lkps: Lkps, token: str | None = None, **params: Any) -> Any:
    return await lkps.http.get(
        "/api/audit/checkpoints",
        params=params,
        headers={"Authorization": f"Bearer {token or auditor(lkps)}"},
    )


async def test_auditors_get_the_newest_signed_checkpoints(
    lkps: Lkps, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    await lkps.register()
    await lkps.start_session()
    checkpointer = lkps.services.checkpointer
    assert checkpointer is not None
    first = await checkpointer.take()
    await lkps.start_session()
    with caplog.at_level(logging.INFO, logger="lkps.audit"):
        second = await checkpointer.take()

    response = await checkpoints(lkps)
    assert response.status_code == 200
    served = response.json()["checkpoints"]
    assert served == [second.as_json(), first.as_json()]  # newest first
    head_seq, head_hash = await lkps.services.audit.head()
    assert (served[0]["seq"], served[0]["hash"]) == (head_seq, head_hash) == (3, head_hash)
    assert served[0]["key_id"] == lkps.services.audit.key.key_id  # type: ignore[union-attr]
    assert settings.audit_signing_key is not None
    public_key = load_public_key(public_path(settings.audit_signing_key))
    assert all(Checkpoint.from_json(document).verify(public_key) for document in served)
    # The same checkpoint went to the log stream, where a SIEM keeps it.
    logged = [r for r in caplog.records if hasattr(r, "audit_checkpoint")]
    assert [r.audit_checkpoint for r in logged] == [second.as_json()]
    assert logged[0].name == "lkps.audit"

    limited = (await checkpoints(lkps, limit=1)).json()["checkpoints"]
    assert limited == [second.as_json()]


async def test_a_changed_checkpoint_no_longer_verifies(lkps: Lkps, settings: Settings) -> None:
    await lkps.register()
    assert lkps.services.checkpointer is not None and settings.audit_signing_key is not None
    document = (await lkps.services.checkpointer.take()).as_json()
    public_key = load_public_key(public_path(settings.audit_signing_key))
    for field, value in (("seq", 99), ("hash", "f" * 64), ("key_id", "0" * 16)):
        assert not Checkpoint.from_json({**document, field: value}).verify(public_key)


@pytest.mark.parametrize(
    "token",
    [
        lambda lkps: lkps.user_token("alice"),
        lambda lkps: lkps.user_token("ops", roles=["LKPS.Admin"]),
        lambda lkps: lkps.app_token(CLIENT_B),
    ],
    ids=["plain-user", "admin-only", "app"],
)
async def test_without_the_auditor_role_no_checkpoint_is_shown(lkps: Lkps, token: Any) -> None:
    assert lkps.services.checkpointer is not None
    await lkps.services.checkpointer.take()
    response = await checkpoints(lkps, token(lkps))
    assert response.status_code == 403
    assert "checkpoints" not in response.json()
    assert response.json()["error"]


async def test_without_a_token_401(lkps: Lkps) -> None:
    response = await lkps.http.get("/api/audit/checkpoints")
    assert response.status_code == 401
    assert "checkpoints" not in response.json()


@pytest.mark.parametrize("limit", ["0", "1001", "x"])
async def test_a_bad_limit_is_a_400(lkps: Lkps, limit: str) -> None:
    response = await checkpoints(lkps, limit=limit)
    assert response.status_code == 400
    assert set(response.json()) >= {"error", "message", "request_id"}


async def test_the_background_job_takes_checkpoints(lkps: Lkps) -> None:
    await lkps.register()
    job = lkps.services.background["lkps-audit-checkpoint"]
    runs = job.runs
    job.wake()
    await job.ran(runs + 1)
    assert job.failures == 0
    served = (await checkpoints(lkps)).json()["checkpoints"]
    assert served and served[0]["seq"] == 1


async def test_shutdown_writes_a_last_checkpoint_after_the_last_record(
    settings: Settings,
) -> None:
    async with running_services(settings) as services:
        await services.audit.append(
            services.audit.event_entry(AuditEvent.AGENT_EXPIRE, reason="test")
        )
        await services.audit.append(
            services.audit.event_entry(AuditEvent.AGENT_EXPIRE, reason="test")
        )
    db = Database.from_url(settings.database_url)
    try:
        stored = await AuditLog(db).checkpoints(10)
    finally:
        await db.dispose()
    assert [row["seq"] for row in stored] == [2]


async def test_verify_over_the_api_checks_the_stored_checkpoints(
    lkps: Lkps, store_sql: StoreSql
) -> None:
    await lkps.register()
    await lkps.start_session()
    await lkps.start_session()
    assert lkps.services.checkpointer is not None
    await lkps.services.checkpointer.take()
    headers = {"Authorization": f"Bearer {auditor(lkps)}"}

    intact = (await lkps.http.get("/api/audit/verify", headers=headers)).json()
    assert intact["ok"] is True and intact["records_checked"] == 3

    await store_sql.allow_audit_changes()
    await store_sql.execute(
        "DELETE FROM audit_records WHERE seq >= 3",
        "UPDATE audit_chain_head SET seq = 2, "
        "hash = (SELECT hash FROM audit_records WHERE seq = 2) WHERE id = 1",
    )
    rewound = (await lkps.http.get("/api/audit/verify", headers=headers)).json()
    assert rewound["ok"] is False and rewound["broken_at_seq"] == 3
    assert "truncated" in rewound["problem"]

    # Moving the stored checkpoint back along with the head breaks its signature.
    await store_sql.execute(
        "UPDATE audit_checkpoints SET seq = 2, "
        "hash = (SELECT hash FROM audit_records WHERE seq = 2)"
    )
    forged = (await lkps.http.get("/api/audit/verify", headers=headers)).json()
    assert forged["ok"] is False and "signature does not verify" in forged["problem"]
