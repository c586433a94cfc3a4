"""`lkps session start`, `lkps agents`, `lkps audit --url`: the CLI against a running LKPS."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lkps.cli.main import app
from lkps.config import Settings
from tests.audit_keys import public_path
from tests.backends import StoreSql
from tests.conftest import AGENT, API_AUDIENCE, CLIENT_B, Lkps, Served
from tests.processes import clean_environment, run_lkps

# These are about the CLI and the API between it and LKPS; the store behind LKPS is
# exercised on every backend by tests/api and tests/client.
pytestmark = [pytest.mark.cli, pytest.mark.backends("sqlite")]


def roles(served: Served, *names: str) -> str:
    return served.entra.user_token(
        audience=API_AUDIENCE, client_app_id=CLIENT_B, username="ops", roles=list(names)
    )


def remote(served: Served, token: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = clean_environment(LKPS_URL=served.url, LKPS_TOKEN=token)
    return run_lkps(*args, env=env, cwd=cwd)


def test_session_start_prints_room_url_and_token(served: Served, tmp_path: Path) -> None:
    result = remote(
        served, served.user_token(), "session", "start", "--agent", AGENT,
        "--metadata", "language=en", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    session = json.loads(result.stdout)
    assert session["room_name"].startswith(f"alice-{AGENT}-")
    assert session["participant_token"].count(".") == 2
    assert session["livekit_url"]


def test_session_start_errors_are_one_clear_line(served: Served, tmp_path: Path) -> None:
    absent = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"
    result = remote(
        served, served.user_token(), "session", "start", "--agent", absent, cwd=tmp_path
    )
    assert result.returncode == 1
    assert f"Agent with app ID '{absent}' is not connected" in result.stderr
    assert "Traceback" not in result.stderr
    bad = remote(
        served,
        served.user_token(),
        "session",
        "start",
        "--agent",
        AGENT,
        "--metadata",
        "novalue",
        cwd=tmp_path,
    )
    assert bad.returncode == 2


def test_agents_lists_and_overrides(served: Served, tmp_path: Path) -> None:
    admin = roles(served, "LKPS.Admin")
    listed = remote(served, admin, "agents", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    [agent] = json.loads(listed.stdout)
    assert agent["agent_id"] == AGENT and agent["present"] is True

    changed = remote(served, admin, "agents", "override", AGENT, "--allow", CLIENT_B, cwd=tmp_path)
    assert changed.returncode == 0, changed.stderr
    assert json.loads(changed.stdout)["additional_clients"] == [CLIENT_B]
    table = remote(served, admin, "agents", cwd=tmp_path)
    assert "an operator override applies" in table.stdout
    cleared = remote(served, admin, "agents", "clear-override", AGENT, cwd=tmp_path)
    assert cleared.returncode == 0

    refused = remote(served, served.user_token(), "agents", cwd=tmp_path)
    assert refused.returncode == 1
    assert "LKPS.Admin" in refused.stderr


def test_audit_over_the_api(served: Served, tmp_path: Path) -> None:
    auditor = roles(served, "LKPS.Auditor")
    remote(served, served.user_token(), "session", "start", "--agent", AGENT, cwd=tmp_path)
    verify = remote(served, auditor, "audit", "verify", cwd=tmp_path)
    assert verify.returncode == 0, verify.stderr
    assert "intact: 2 records" in verify.stdout
    found = remote(served, auditor, "audit", "search", "--event", "session.start", cwd=tmp_path)
    [record] = [json.loads(line) for line in found.stdout.splitlines()]
    assert record["actor_cwid"] == "alice"
    exported = remote(served, auditor, "audit", "export", cwd=tmp_path)
    assert [json.loads(line)["seq"] for line in exported.stdout.splitlines()] == [1, 2]
    tail = remote(served, auditor, "audit", "tail", "-n", "1", cwd=tmp_path)
    assert [json.loads(line)["seq"] for line in tail.stdout.splitlines()] == [2]
    refused = remote(served, roles(served, "LKPS.Admin"), "audit", "verify", cwd=tmp_path)
    assert refused.returncode == 1


async def test_checkpoints_over_the_api_find_a_truncated_trail(
    served: Served, lkps: Lkps, settings: Settings, store_sql: StoreSql, tmp_path: Path
) -> None:
    """`lkps audit checkpoints --url` exports what `GET /api/audit/checkpoints` serves;
    `verify --checkpoints --url` checks the trail the API serves against them with the
    public key alone, and finds its newest records removed and the head rewound (a
    valid shorter chain) where LKPS's own verify, its stored checkpoints removed too,
    calls the trail intact."""
    auditor = roles(served, "LKPS.Auditor")
    remote(served, served.user_token(), "session", "start", "--agent", AGENT, cwd=tmp_path)
    assert lkps.services.checkpointer is not None and settings.audit_signing_key is not None
    taken = await lkps.services.checkpointer.take()
    exported = tmp_path / "checkpoints.jsonl"
    result = remote(served, auditor, "audit", "checkpoints", "-o", str(exported), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["seq"] for line in exported.read_text().splitlines()] == [taken.seq]
    public_key = public_path(settings.audit_signing_key)
    options = ["--checkpoints", str(exported), "--public-key", str(public_key)]

    verified = remote(served, auditor, "audit", "verify", *options, cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"matches 1 signed checkpoints, the newest at record {taken.seq}" in verified.stdout

    await store_sql.allow_audit_changes()
    await store_sql.execute(
        "DELETE FROM audit_records WHERE seq = (SELECT seq FROM audit_chain_head)",
        "UPDATE audit_chain_head SET seq = seq - 1, hash = (SELECT hash FROM audit_records "
        "WHERE audit_records.seq = audit_chain_head.seq - 1) WHERE id = 1",
        # The writer removes the stored checkpoints too: LKPS's own verify, which checks
        # the trail against them, has nothing left to find the truncation with.
        "DELETE FROM audit_checkpoints",
    )
    assert remote(served, auditor, "audit", "verify", cwd=tmp_path).returncode == 0
    truncated = remote(served, auditor, "audit", "verify", *options, cwd=tmp_path)
    assert truncated.returncode == 1
    assert "broken" in truncated.stdout

    tampered = tmp_path / "tampered.jsonl"
    document = json.loads(exported.read_text())
    tampered.write_text(json.dumps({**document, "seq": document["seq"] - 1}) + "\n")
    options[1] = str(tampered)
    assert remote(served, auditor, "audit", "verify", *options, cwd=tmp_path).returncode == 1

    refused = remote(served, roles(served, "LKPS.Admin"), "audit", "checkpoints", cwd=tmp_path)
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr


def test_remote_commands_say_which_lkps_is_missing(tmp_path: Path) -> None:
    result = run_lkps("agents", "--token", "x", env=clean_environment(), cwd=tmp_path)
    assert result.returncode == 2
    assert "--url" in result.stderr


# Every command that can talk to a running LKPS takes --url/--token/--env (and --scope)
# on itself, as `lkps audit search` always did: `lkps agents override ID --url …`.
REMOTE_COMMANDS = [
    ("agents",),
    ("agents", "list"),
    ("agents", "override", AGENT, "--enforce"),
    ("agents", "clear-override", AGENT),
    ("session", "start", "--agent", AGENT),
    ("audit", "verify"),
    ("audit", "tail"),
    ("audit", "search"),
    ("audit", "export"),
    ("audit", "checkpoints"),
]
COMMAND_IDS = [" ".join(command[:2]) for command in REMOTE_COMMANDS]


@pytest.mark.parametrize("command", REMOTE_COMMANDS, ids=COMMAND_IDS)
def test_every_remote_command_shows_url_token_env_in_its_help(command: tuple[str, ...]) -> None:
    words = [word for word in command if not word.startswith("--") and word != AGENT]
    result = CliRunner().invoke(app, [*words, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for option in ("--url", "--token", "--env", "--scope"):
        assert option in result.output, (command, option)


@pytest.mark.parametrize("command", REMOTE_COMMANDS, ids=COMMAND_IDS)
def test_every_remote_command_takes_url_token_env_on_itself(
    served: Served, command: tuple[str, ...], tmp_path: Path
) -> None:
    token = (
        served.user_token()
        if command[0] == "session"
        else roles(served, "LKPS.Admin", "LKPS.Auditor")
    )
    # On the command line only (no LKPS_URL/LKPS_TOKEN), after the subcommand; --env dev
    # with --url is the dev deployment moved to this server.
    options = ["--url", served.url, "--token", token, "--env", "dev"]
    result = run_lkps(*command, *options, env=clean_environment(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_options_before_the_subcommand_are_refused_saying_where_they_go(tmp_path: Path) -> None:
    result = run_lkps(
        "agents", "--url", "http://127.0.0.1:9", "override", AGENT, env=clean_environment(),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert "give --url after 'override'" in result.stderr


def test_sessions_show_and_list(served: Served, tmp_path: Path) -> None:
    started = remote(
        served, served.user_token(), "session", "start", "--agent", AGENT, "--json", cwd=tmp_path
    )
    assert started.returncode == 0, started.stderr
    session_id = json.loads(started.stdout)["session_id"]

    shown = remote(served, served.user_token(), "sessions", "show", session_id, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert f"session   {session_id}" in shown.stdout and "granted" in shown.stdout
    as_json = remote(
        served, served.user_token(), "sessions", "show", session_id, "--json", cwd=tmp_path
    )
    assert json.loads(as_json.stdout)["state"] == "granted"

    stranger = served.user_token(username="mallory")
    hidden = remote(served, stranger, "sessions", "show", session_id, cwd=tmp_path)
    assert hidden.returncode == 1 and "Traceback" not in hidden.stderr
    assert f"Session '{session_id}' was not found" in hidden.stderr

    auditor = roles(served, "LKPS.Auditor")
    listed = remote(
        served, auditor, "sessions", "list", "--agent", AGENT, "--state", "granted", "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert [s["session_id"] for s in json.loads(listed.stdout)] == [session_id]
    refused = remote(served, served.user_token(), "sessions", "list", cwd=tmp_path)
    assert refused.returncode == 1 and "LKPS.Auditor" in refused.stderr
