"""`lkps serve` and `lkps db`: real processes with their configuration in the environment."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from lkps.authorization.file import write_authorization_file
from lkps_testkit import EntraDouble, ServerThread
from tests.audit_keys import new_audit_key, write_signing_key
from tests.backends import TestDatabase
from tests.conftest import AGENT, API_AUDIENCE, CLIENT_A, LIVEKIT_KEY, LIVEKIT_SECRET
from tests.processes import clean_environment, free_port, lkps_process, process_output, run_lkps

pytestmark = pytest.mark.cli


def test_serve_names_every_missing_setting(tmp_path: Path) -> None:
    result = run_lkps("serve", env=clean_environment(LKPS_ENV="prod"), cwd=tmp_path)
    assert result.returncode == 2
    for name in (
        "LKPS_LIVEKIT_URL",
        "LKPS_LIVEKIT_API_SECRET",
        "LKPS_ENTRA_TENANT_ID",
        "LKPS_ENTRA_AUDIENCES",
        "LKPS_AUDIT_KEY",
        "LKPS_AUDIT_SIGNING_KEY",
    ):
        assert name in result.stderr


def test_serve_does_not_take_livekits_own_variables(tmp_path: Path) -> None:
    env = clean_environment(
        LKPS_ENV="prod",
        LIVEKIT_URL="wss://livekit.from-the-environment.example",
        LIVEKIT_API_KEY="APIfromenvironment",
        LIVEKIT_API_SECRET="e" * 48,
    )
    result = run_lkps("serve", env=env, cwd=tmp_path)
    assert result.returncode == 2
    for name in ("LKPS_LIVEKIT_URL", "LKPS_LIVEKIT_API_KEY", "LKPS_LIVEKIT_API_SECRET"):
        assert f"{name} is required" in result.stderr


def test_invalid_setting_is_a_clear_error(tmp_path: Path) -> None:
    result = run_lkps("serve", env=clean_environment(LKPS_PRESENCE_TTL="soon"), cwd=tmp_path)
    assert result.returncode == 2
    assert "LKPS_PRESENCE_TTL" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("origins", ["*", "https://app.example.com, http://localhost:*"])
def test_serve_refuses_wildcard_browser_origins(
    tmp_path: Path, entra: EntraDouble, entra_server: ServerThread, origins: str
) -> None:
    env = servable_environment(tmp_path, entra, entra_server, LKPS_CORS_ALLOW_ORIGINS=origins)
    result = run_lkps("serve", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot serve: LKPS_CORS_ALLOW_ORIGINS" in result.stderr
    assert "only accepted with LKPS_ENV=dev" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def servable_environment(
    tmp_path: Path, entra: EntraDouble, entra_server: ServerThread, **variables: str
) -> dict[str, str]:
    """A complete non-dev configuration, trusting the Entra double; `variables` on top."""
    authz = tmp_path / "authz.json"
    write_authorization_file(authz, {AGENT: [CLIENT_A]})
    defaults = dict(
        LKPS_ENV="np",
        LKPS_LIVEKIT_URL="wss://livekit.test.example",
        LKPS_LIVEKIT_API_KEY=LIVEKIT_KEY,
        LKPS_LIVEKIT_API_SECRET=LIVEKIT_SECRET,
        LKPS_ENTRA_TENANT_ID=entra.tenant_id,
        LKPS_ENTRA_AUDIENCES=API_AUDIENCE,
        LKPS_ENTRA_JWKS_URL=entra.jwks_url(entra_server.url),
        LKPS_AUTHZ_SOURCE="file",
        LKPS_AUTHZ_FILE=str(authz),
        LKPS_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
        LKPS_AUDIT_KEY=new_audit_key(),
        LKPS_AUDIT_SIGNING_KEY=str(write_signing_key(tmp_path / "audit-signing.pem")),
        # Presence from register/heartbeat, which these tests drive by hand.
        LKPS_AGENT_CONNECTION="direct",
    )
    return clean_environment(**{**defaults, **variables})


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"LKPS_AUDIT_KEY": "too-short"}, "LKPS_AUDIT_KEY must be at least 32 characters"),
        (
            {"LKPS_AUDIT_SIGNING_KEY": "/nonexistent/key.pem"},
            "LKPS_AUDIT_SIGNING_KEY /nonexistent/key.pem is not a readable PEM private key",
        ),
    ],
    ids=["short-audit-key", "missing-signing-key"],
)
def test_serve_refuses_bad_audit_keys_in_one_line(
    tmp_path: Path,
    entra: EntraDouble,
    entra_server: ServerThread,
    variables: dict[str, str],
    message: str,
) -> None:
    env = servable_environment(tmp_path, entra, entra_server, **variables)
    result = run_lkps("serve", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert f"cannot serve: {message}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_serve_runs_the_service(
    tmp_path: Path, entra: EntraDouble, entra_server: ServerThread
) -> None:
    port, metrics_port = free_port(), free_port()
    env = servable_environment(
        tmp_path,
        entra,
        entra_server,
        LKPS_PORT=str(port),
        LKPS_METRICS_PORT=str(metrics_port),
    )
    base = f"http://127.0.0.1:{port}"
    with lkps_process(
        "serve", env=env, cwd=tmp_path, health_url=f"{base}/api/health/ready"
    ) as process:
        agent = entra.app_token(audience=API_AUDIENCE, client_app_id=AGENT)
        assert (
            httpx.post(
                f"{base}/api/agent/register", headers={"Authorization": f"Bearer {agent}"}
            ).status_code
            == 200
        )
        user = entra.user_token(audience=API_AUDIENCE, client_app_id=CLIENT_A)
        started = httpx.post(
            f"{base}/api/session/start",
            # From a gateway on 127.0.0.1, trusted by default (LKPS_FORWARDED_ALLOW_IPS).
            headers={"Authorization": f"Bearer {user}", "X-Forwarded-For": "198.51.100.23"},
            json={"agent_entra_app_id": AGENT},
        )
        assert started.status_code == 200, started.text
        assert "server" not in started.headers
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert (
            'lkps_session_starts_total{agent="' + AGENT + '",outcome="granted",status="200"} 1.0'
            in metrics
        )
        assert "lkps_audit_write_seconds_bucket" in metrics
        assert "/api/session/start" not in httpx.get(f"{base}/metrics").text  # not on the API port
    # A graceful stop on SIGTERM (one worker: uvicorn in this process) exits 0.
    assert process.returncode == 0
    assert "Application shutdown complete" in process_output(tmp_path)
    lines = [
        json.loads(line) for line in process_output(tmp_path).splitlines() if line.startswith("{")
    ]
    assert lines, "serve logs JSON lines"
    audit_lines = [line for line in lines if line.get("audit_event") == "session.start"]
    assert audit_lines and audit_lines[0]["request_id"] == started.headers["x-request-id"]
    found = run_lkps("audit", "search", "--event", "session.start", env=env, cwd=tmp_path)
    assert json.loads(found.stdout)["client_ip"] == "198.51.100.23"
    for token in (agent, user, started.json()["participant_token"]):
        assert token.split(".")[2] not in process_output(tmp_path)


@pytest.mark.backends("postgresql")  # SQLite installs migrate themselves
def test_serve_refuses_a_store_without_the_schema_in_one_line(
    tmp_path: Path, entra: EntraDouble, entra_server: ServerThread, empty_database: TestDatabase
) -> None:
    env = servable_environment(
        tmp_path,
        entra,
        entra_server,
        LKPS_PORT=str(free_port()),
        LKPS_WORKERS="2",
        LKPS_DATABASE_URL=empty_database.url,
    )
    result = run_lkps("serve", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot serve: database schema is at nothing" in result.stderr
    assert "run `lkps db upgrade`" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "Started server process" not in result.stderr  # no worker was started


def test_db_upgrade_and_current(empty_database: TestDatabase, tmp_path: Path) -> None:
    env = clean_environment(LKPS_DATABASE_URL=empty_database.url)
    # An empty PostgreSQL database has no schema yet (1); a SQLite file that is not there
    # is no database at all (2), and `db current` does not create it.
    empty = run_lkps("db", "current", env=env, cwd=tmp_path)
    assert empty.returncode == (2 if empty_database.url.startswith("sqlite") else 1), empty.stderr
    upgraded = run_lkps("db", "upgrade", env=env, cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    current = run_lkps("db", "current", env=env, cwd=tmp_path)
    assert current.returncode == 0 and "up to date" in current.stdout


def test_serve_records_a_forwarded_client_address_as_an_ip_or_marked(
    tmp_path: Path, entra: EntraDouble, entra_server: ServerThread
) -> None:
    """Behind a trusted gateway (127.0.0.1, LKPS_FORWARDED_ALLOW_IPS' default) uvicorn
    takes the client address from X-Forwarded-For as written (issue 13): what is not an IP
    address reaches the audit marked and at most 64 characters long."""
    port = free_port()
    env = servable_environment(
        tmp_path, entra, entra_server, LKPS_PORT=str(port), LKPS_METRICS_PORT=str(free_port())
    )
    base = f"http://127.0.0.1:{port}"
    forwarded = {
        "not-an-ip": "invalid:not-an-ip",
        'x"}{': "invalid:x___",
        "a" * 3000: "invalid:" + "a" * 56,
        "2001:DB8:0:0:0:0:0:1": "2001:db8::1",
        # A list: uvicorn takes the last address its trusted gateways did not add.
        "198.51.100.7, 203.0.113.9": "203.0.113.9",
        "a, b": "invalid:b",
    }
    expected: dict[str, str] = {}
    with lkps_process("serve", env=env, cwd=tmp_path, health_url=f"{base}/api/health/ready"):
        user = entra.user_token(audience=API_AUDIENCE, client_app_id=CLIENT_A)
        for header, recorded in forwarded.items():
            response = httpx.post(
                f"{base}/api/session/start",
                headers={"Authorization": f"Bearer {user}", "X-Forwarded-For": header},
                json={"agent_entra_app_id": AGENT},
            )
            assert response.status_code == 404, response.text  # no agent: audited, denied
            expected[response.headers["x-request-id"]] = recorded
    found = run_lkps("audit", "search", "--event", "session.start", env=env, cwd=tmp_path)
    records = [json.loads(line) for line in found.stdout.splitlines() if line.strip()]
    assert {record["request_id"]: record["client_ip"] for record in records} == expected
