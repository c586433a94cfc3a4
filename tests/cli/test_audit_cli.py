"""`lkps audit verify | tail | export` over a trail LKPS wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lkps.config import Settings
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
        ("DELETE FROM audit_records WHERE seq >= 5", ["broken at record 5", "head is at 6"]),
    ],
    ids=["edited-row", "removed-row", "removed-tail"],
)
async def test_verify_reports_the_first_broken_link(
    trail: dict[str, str], store_sql: StoreSql, tmp_path: Path, statement: str, expected: list[str]
) -> None:
    await tamper(store_sql, statement)
    result = run_lkps("audit", "verify", env=trail, cwd=tmp_path)
    assert result.returncode == 1
    for fragment in expected:
        assert fragment in result.stdout


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
