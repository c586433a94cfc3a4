"""`lkps dev`: the README walk-through, as a newcomer would run it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import jwt
import pytest
from livekit.api import TokenVerifier

from lkps.cli.dev import DEV_AGENT_ID, DEV_CLIENT_ID, DEV_LIVEKIT_KEY, DEV_LIVEKIT_SECRET
from lkps.config import DEV_AUDIENCE, DEV_TENANT_ID
from tests.processes import clean_environment, free_port, lkps_process, process_output, run_lkps

pytestmark = pytest.mark.cli


@pytest.mark.parametrize("env", ["prod", "np"])
def test_dev_refuses_a_non_dev_environment(tmp_path: Path, env: str) -> None:
    result = run_lkps("dev", env=clean_environment(LKPS_ENV=env), cwd=tmp_path)
    assert result.returncode == 2
    assert f"refuses LKPS_ENV={env}" in result.stderr


def test_dev_token_refuses_a_non_dev_environment(tmp_path: Path) -> None:
    result = run_lkps(
        "dev", "token", "--user", "alice", env=clean_environment(LKPS_ENV="prod"), cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stdout == ""


def test_dev_token_needs_exactly_one_subject(tmp_path: Path) -> None:
    result = run_lkps("dev", "token", env=clean_environment(), cwd=tmp_path)
    assert result.returncode == 2
    both = run_lkps(
        "dev", "token", "--user", "a", "--app", "b", env=clean_environment(), cwd=tmp_path
    )
    assert both.returncode == 2


def test_dev_tokens_are_entra_shaped(tmp_path: Path) -> None:
    env = clean_environment()
    user = run_lkps("dev", "token", "--user", "alice", env=env, cwd=tmp_path).stdout.strip()
    claims = jwt.decode(user, options={"verify_signature": False})
    assert claims["iss"] == f"https://login.microsoftonline.com/{DEV_TENANT_ID}/v2.0"
    assert claims["aud"] == DEV_AUDIENCE
    assert claims["azp"] == DEV_CLIENT_ID
    assert claims["preferred_username"].startswith("alice@")
    assert claims["scp"] and claims["ver"] == "2.0"
    app = run_lkps(
        "dev", "token", "--agent", DEV_AGENT_ID, "--v1", env=env, cwd=tmp_path
    ).stdout.strip()
    app_claims = jwt.decode(app, options={"verify_signature": False})
    assert app_claims["appid"] == DEV_AGENT_ID and app_claims["idtyp"] == "app"
    assert app_claims["iss"] == f"https://sts.windows.net/{DEV_TENANT_ID}/"
    # The key persists in the state folder, so every token has the same signer.
    assert jwt.get_unverified_header(user)["kid"] == jwt.get_unverified_header(app)["kid"]
    assert (tmp_path / "var/dev/idp-signing-key.pem").stat().st_mode & 0o077 == 0


@pytest.mark.filterwarnings("ignore:The HMAC key is:jwt.warnings.InsecureKeyLengthWarning")
def test_readme_walkthrough_against_a_running_dev_instance(tmp_path: Path) -> None:
    port = free_port()
    env = clean_environment()
    base = f"http://127.0.0.1:{port}"
    with lkps_process(
        "dev", "--port", str(port), env=env, cwd=tmp_path, health_url=f"{base}/api/health"
    ):
        agent_token = run_lkps(
            "dev", "token", "--agent", DEV_AGENT_ID, env=env, cwd=tmp_path
        ).stdout.strip()
        registered = httpx.post(
            f"{base}/api/agent/register", headers={"Authorization": f"Bearer {agent_token}"}
        )
        assert registered.status_code == 200, registered.text
        assert registered.json()["livekit_url"] == "ws://127.0.0.1:7880"

        user_token = run_lkps(
            "dev", "token", "--user", "alice", env=env, cwd=tmp_path
        ).stdout.strip()
        started = httpx.post(
            f"{base}/api/session/start",
            headers={"Authorization": f"Bearer {user_token}"},
            json={"agent_entra_app_id": DEV_AGENT_ID, "metadata": {"language": "en"}},
        )
        assert started.status_code == 200, started.text
        session = started.json()
        claims = TokenVerifier(DEV_LIVEKIT_KEY, DEV_LIVEKIT_SECRET).verify(
            session["participant_token"]
        )
        assert claims.identity == "alice"
        assert claims.room_config is not None
        assert claims.room_config.agents[0].agent_name == DEV_AGENT_ID
        assert json.loads(claims.room_config.agents[0].metadata) == {"language": "en"}

        decoded = run_lkps("dev", "decode", session["participant_token"], env=env, cwd=tmp_path)
        assert decoded.returncode == 0, decoded.stderr
        assert json.loads(decoded.stdout)["video"]["room"] == session["room_name"]
        forged = run_lkps(
            "dev", "decode", session["participant_token"][:-2] + "xx", env=env, cwd=tmp_path
        )
        assert forged.returncode == 2

        other_client = run_lkps(
            "dev",
            "token",
            "--user",
            "bob",
            "--client-id",
            "99999999-9999-4999-8999-999999999999",
            env=env,
            cwd=tmp_path,
        ).stdout.strip()
        denied = httpx.post(
            f"{base}/api/session/start",
            headers={"Authorization": f"Bearer {other_client}"},
            json={"agent_entra_app_id": DEV_AGENT_ID},
        )
        assert denied.status_code == 403
        assert httpx.get(f"{base}/api/health/ready").status_code == 200
        jwks = httpx.get(f"{base}/dev/idp/{DEV_TENANT_ID}/discovery/v2.0/keys").json()
        assert jwks["keys"][0]["kty"] == "RSA"

    verify = run_lkps("audit", "verify", env=env, cwd=tmp_path)
    assert verify.returncode == 0, verify.stderr
    assert "intact: 3 records" in verify.stdout
    output = process_output(tmp_path)
    assert "Try it" in output
    for secret in (
        agent_token,
        user_token,
        session["participant_token"],
        registered.json()["token"],
    ):
        assert secret not in output
        assert secret.split(".")[2] not in output
