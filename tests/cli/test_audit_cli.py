"""`lkps audit verify | tail | export` over a trail LKPS wrote."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from lkps.audit import AuditLog
from lkps.audit.chain import ChainKey, record_hash
from lkps.config import Settings
from lkps.store import Database
from tests.audit_keys import public_path
from tests.backends import StoreSql, TestDatabase
from tests.conftest import Lkps
from tests.processes import clean_environment, free_port, run_lkps

pytestmark = pytest.mark.cli


@pytest.fixture
async def trail(lkps: Lkps, database: TestDatabase, settings: Settings) -> dict[str, str]:
    """Six records written through the API; the environment that points the CLI at them
    (with the audit key they were chained with)."""
    registration = (await lkps.register()).json()["registration_id"]
    await lkps.register(registration_id=registration)
    for user in ("alice", "bob", "carol"):
        await lkps.start_session(token=lkps.user_token(user))
    await lkps.deregister()
    return clean_environment(
        LKPS_DATABASE_URL=database.url, LKPS_AUDIT_KEY=settings.audit_key.get_secret_value()
    )


async def tamper(store_sql: StoreSql, statement: str) -> None:
    """What someone with write access to the database could do."""
    await store_sql.allow_audit_changes()
    await store_sql.execute(statement)


async def test_verify_passes_on_an_untouched_trail(trail: dict[str, str], tmp_path: Path) -> None:
    result = run_lkps("audit", "verify", env=trail, cwd=tmp_path)
    assert result.returncode == 0
    assert "audit chain intact: 6 records, head at 6" in result.stdout


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        (
            "UPDATE audit_records SET actor_cwid = 'mallory' WHERE seq = 4",
            ["broken at record 4", "edited"],
        ),
        ("DELETE FROM audit_records WHERE seq = 2", ["broken at record 2", "missing"]),
        ("DELETE FROM audit_records WHERE seq = 6", ["broken at record 6", "head is at 6"]),
        ("DELETE FROM audit_records WHERE seq >= 5", ["broken at record 5", "head is at 6"]),
    ],
    ids=["edited-row", "removed-row", "removed-last-row", "removed-tail"],
)
async def test_verify_reports_the_first_broken_link(
    trail: dict[str, str], store_sql: StoreSql, tmp_path: Path, statement: str, expected: list[str]
) -> None:
    await tamper(store_sql, statement)
    result = run_lkps("audit", "verify", env=trail, cwd=tmp_path)
    assert result.returncode == 1
    for fragment in expected:
        assert fragment in result.stdout


# Tamper evidence against a database writer (issue 12, section 3): with the append-only
# triggers dropped, a writer removes the newest records and rewinds the head, or rewrites
# a record and recomputes every later link. The keyed chain catches the rewrite with the
# audit key alone; signed checkpoints catch the rewound head with the public key alone.

REWIND = (
    "DELETE FROM audit_records WHERE seq >= 5",
    "UPDATE audit_chain_head SET seq = 4, "
    "hash = (SELECT hash FROM audit_records WHERE seq = 4) WHERE id = 1",
)


@pytest.fixture
async def checkpoints(
    trail: dict[str, str], lkps: Lkps, settings: Settings, tmp_path: Path
) -> list[str]:
    """A checkpoint taken after the six records, exported by `lkps audit checkpoints`:
    the options that verify the trail against it with the public key."""
    assert lkps.services.checkpointer is not None and settings.audit_signing_key is not None
    await lkps.services.checkpointer.take()
    exported = tmp_path / "checkpoints.jsonl"
    result = run_lkps("audit", "checkpoints", "-o", str(exported), env=trail, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["seq"] for line in exported.read_text().splitlines()] == [6]
    public_key = public_path(settings.audit_signing_key)
    return ["--checkpoints", str(exported), "--public-key", str(public_key)]


def without_the_key(trail: dict[str, str]) -> dict[str, str]:
    """An auditor holding the public key only (outside dev: no derived key either)."""
    return {**{k: v for k, v in trail.items() if k != "LKPS_AUDIT_KEY"}, "LKPS_ENV": "np"}


async def rewrite_and_rechain(
    store_sql: StoreSql, database: TestDatabase, forger: ChainKey | None
) -> None:
    """Review finding (b): record 3 (bob's session start) changed to mallory's, and every
    later link recomputed, unkeyed or under a key the writer chose, with the head."""
    db = Database.from_url(database.url)
    try:
        records = [record async for record in AuditLog(db).records()]
    finally:
        await db.dispose()
    statements, previous = [], records[1].hash
    for record in records[2:]:
        fields = {**dataclasses.asdict(record), "prev_hash": previous}
        fields.pop("hash")
        if record.seq == 3:
            fields["actor_cwid"] = "mallory"
        fields["key_id"] = forger.key_id if forger else None
        previous = record_hash(fields, forger)
        key_id = f"'{forger.key_id}'" if forger else "NULL"
        # Every value spliced in is the test's own (hex digests, a fixed name).
        statements.append(
            f"UPDATE audit_records SET actor_cwid = '{fields['actor_cwid']}', "  # noqa: S608
            f"key_id = {key_id}, prev_hash = '{fields['prev_hash']}', hash = '{previous}' "
            f"WHERE seq = {record.seq}"
        )
    statements.append(f"UPDATE audit_chain_head SET hash = '{previous}' WHERE id = 1")  # noqa: S608
    await store_sql.allow_audit_changes()
    await store_sql.execute(*statements)


async def test_an_untouched_trail_verifies_both_ways(
    trail: dict[str, str], checkpoints: list[str], tmp_path: Path
) -> None:
    with_key = run_lkps("audit", "verify", *checkpoints, env=trail, cwd=tmp_path)
    assert with_key.returncode == 0, with_key.stdout + with_key.stderr
    assert "intact: 6 records" in with_key.stdout
    assert "matches 1 signed checkpoints, the newest at record 6" in with_key.stdout
    public_only = run_lkps(
        "audit", "verify", *checkpoints, env=without_the_key(trail), cwd=tmp_path
    )
    assert public_only.returncode == 0, public_only.stdout + public_only.stderr
    assert "intact: 6 records" in public_only.stdout
    assert "contents of 6 keyed records not checked" in public_only.stdout


async def test_a_truncated_tail_with_the_head_rewound_is_found_by_the_checkpoints(
    trail: dict[str, str], checkpoints: list[str], store_sql: StoreSql, tmp_path: Path
) -> None:
    await tamper_all(store_sql, *REWIND)
    # A valid shorter chain: the key alone cannot tell (issue 12, finding (a)).
    key_alone = run_lkps("audit", "verify", env=trail, cwd=tmp_path)
    assert key_alone.returncode == 0 and "intact: 4 records, head at 4" in key_alone.stdout
    for env in (trail, without_the_key(trail)):
        result = run_lkps("audit", "verify", *checkpoints, env=env, cwd=tmp_path)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "broken at record 5" in result.stdout
        assert "checkpoint is at record 6 but records end at 4 (truncated)" in result.stdout


@pytest.mark.parametrize(
    "forger",
    [None, ChainKey("0" * 16, b"g" * 32)],
    ids=["rechained-unkeyed", "rechained-with-own-key"],
)
async def test_a_rewritten_and_rechained_record_is_found_by_the_key(
    trail: dict[str, str],
    checkpoints: list[str],
    store_sql: StoreSql,
    database: TestDatabase,
    tmp_path: Path,
    forger: ChainKey | None,
) -> None:
    await rewrite_and_rechain(store_sql, database, forger)
    result = run_lkps("audit", "verify", env=trail, cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    assert "broken at record 3" in result.stdout
    # With the public key alone, the checkpoint taken after it shows the rewrite too.
    public_only = run_lkps(
        "audit", "verify", *checkpoints, env=without_the_key(trail), cwd=tmp_path
    )
    assert public_only.returncode == 1, public_only.stdout
    assert "broken at record 6" in public_only.stdout and "rewritten" in public_only.stdout


async def test_a_changed_checkpoint_file_is_itself_a_finding(
    trail: dict[str, str], checkpoints: list[str], tmp_path: Path
) -> None:
    exported = Path(checkpoints[1])
    document = json.loads(exported.read_text())
    exported.write_text(json.dumps({**document, "seq": 4}) + "\n")
    result = run_lkps("audit", "verify", *checkpoints, env=trail, cwd=tmp_path)
    assert result.returncode == 1
    assert "checkpoint on line 1: signature does not verify" in result.stderr
    assert "Traceback" not in result.stderr


async def test_checkpoints_need_the_public_key(
    trail: dict[str, str], checkpoints: list[str], tmp_path: Path
) -> None:
    result = run_lkps("audit", "verify", "--checkpoints", checkpoints[1], env=trail, cwd=tmp_path)
    assert result.returncode == 2 and "--checkpoints needs --public-key" in result.stderr
    not_a_key = tmp_path / "not-a-key.pem"
    not_a_key.write_text("hello")
    result = run_lkps("audit", "verify", *checkpoints[:3], str(not_a_key), env=trail, cwd=tmp_path)
    assert result.returncode == 2 and "not a PEM public key" in result.stderr


async def test_keyed_records_without_the_key_and_without_checkpoints_fail_closed(
    trail: dict[str, str], tmp_path: Path
) -> None:
    result = run_lkps("audit", "verify", env=without_the_key(trail), cwd=tmp_path)
    assert result.returncode == 1
    assert "broken at record 1" in result.stdout and "which was not given" in result.stdout


async def tamper_all(store_sql: StoreSql, *statements: str) -> None:
    await store_sql.allow_audit_changes()
    await store_sql.execute(*statements)


async def test_export_writes_every_record_as_json_lines(
    trail: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "audit.jsonl"
    result = run_lkps(
        "audit", "export", "--format", "jsonl", "-o", str(out), env=trail, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["event"] for r in records] == [
        "agent.register",
        "agent.renew",
        "session.start",
        "session.start",
        "session.start",
        "agent.deregister",
    ]
    assert records[3]["actor_cwid"] == "bob" and records[3]["prev_hash"] == records[2]["hash"]
    assert isinstance(records[2]["details"], dict)


async def test_tail_prints_the_newest(trail: dict[str, str], tmp_path: Path) -> None:
    result = run_lkps("audit", "tail", "-n", "2", env=trail, cwd=tmp_path)
    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == [5, 6]


def test_audit_without_a_store_is_a_clear_error(tmp_path: Path) -> None:
    store = tmp_path / "none.db"
    env = clean_environment(LKPS_DATABASE_URL=f"sqlite+aiosqlite:///{store}")
    result = run_lkps("audit", "verify", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert f"no LKPS database at {store}" in result.stderr and "Traceback" not in result.stderr
    assert not store.exists()
    store.touch()  # a file, but not LKPS's
    result = run_lkps("audit", "verify", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert f"no LKPS schema at {store}" in result.stderr and "Traceback" not in result.stderr


READ_ONLY = [
    ("audit", "verify"),
    ("audit", "tail"),
    ("audit", "search"),
    ("audit", "export"),
    ("db", "current"),
]


@pytest.mark.parametrize("command", READ_ONLY, ids=" ".join)
def test_read_only_commands_outside_lkps_create_nothing_and_say_where_they_looked(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    result = run_lkps(*command, env=clean_environment(), cwd=tmp_path)
    assert result.returncode != 0
    assert f"no LKPS database at {tmp_path / 'var' / 'lkps.db'}" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no var/, no lkps.db


@pytest.mark.parametrize("command", READ_ONLY, ids=" ".join)
def test_an_unreachable_database_is_named_with_its_password_hidden(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql+asyncpg://lkps:a-database-password@127.0.0.1:{port}/lkps"
    result = run_lkps(*command, env=clean_environment(LKPS_DATABASE_URL=url), cwd=tmp_path)
    assert result.returncode != 0
    assert f"postgresql+asyncpg://lkps:***@127.0.0.1:{port}/lkps" in result.stderr
    assert "a-database-password" not in result.stderr
    assert "Traceback" not in result.stderr
