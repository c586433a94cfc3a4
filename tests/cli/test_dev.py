"""`lkps dev`: the README walk-through, as a newcomer would run it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest
from livekit.api import TokenVerifier

from lkps.cli.dev import DEV_AGENT_ID, DEV_CLIENT_ID, DEV_LIVEKIT_KEY, DEV_LIVEKIT_SECRET
from lkps.config import DEV_AUDIENCE, DEV_TENANT_ID
from tests.processes import (
    clean_environment,
    free_port,
    lkps_process,
    process_output,
    run_lkps,
    wait_until_ready,
)

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


# What a newcomer types: the commands `lkps dev` and the README print, run as printed.

ROOT = Path(__file__).resolve().parents[2]
LOCAL_URL = re.compile(r"http://127\.0\.0\.1:(\d+)")
ROOM = re.compile(r'"room_name":\s*"alice-')


def newcomer_shell() -> dict[str, str]:
    """A newcomer's terminal: `python3` as installed (with uv, which the README's first
    command installs), not this test run's virtual environment; `uv run` finds this
    checkout's project from the folder the dev instance runs in (UV_PROJECT), as it
    would in the checkout itself."""
    ours = {str(Path(sys.prefix) / "bin")}
    if "VIRTUAL_ENV" in os.environ:
        ours.add(str(Path(os.environ["VIRTUAL_ENV"]) / "bin"))
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p not in ours)
    env = clean_environment(PATH=path, UV_PROJECT=str(ROOT))
    env.pop("VIRTUAL_ENV", None)
    probe = subprocess.run(["python3", "-m", "uv", "--version"], env=env, capture_output=True)
    if probe.returncode != 0:
        pytest.skip("needs python3 with uv on PATH, as the README's first command installs it")
    return env


def run_shell(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-c", script], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def banner_of(output: str) -> str:
    """What `lkps dev` printed before its logs (JSON lines) began."""
    return output.split("\n{", 1)[0]


def indented_block(banner: str, heading: str) -> str:
    """The indented lines under `heading`, dedented: a script for bash."""
    lines = banner.split(heading, 1)[1].splitlines()[1:]
    block = []
    for line in lines:
        if not line.startswith("  "):
            break
        block.append(line[2:])
    return "\n".join(block)


def session_status(base: str, user_token: str) -> int:
    return httpx.post(
        f"{base}/api/session/start",
        headers={"Authorization": f"Bearer {user_token}"},
        json={"agent_entra_app_id": DEV_AGENT_ID},
        timeout=10,
    ).status_code


def test_the_banner_commands_work_as_printed_on_another_port(tmp_path: Path) -> None:
    ttl = 6
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    shell = newcomer_shell()
    instance = clean_environment(LKPS_PRESENCE_TTL=str(ttl), LKPS_HEARTBEAT_INTERVAL="1")
    with lkps_process(
        "dev", "--port", str(port), env=instance, cwd=tmp_path, health_url=f"{base}/api/health"
    ):
        banner = banner_of(process_output(tmp_path))
        # Every URL names this instance; every command is spelt as the README spells it.
        assert {int(found) for found in LOCAL_URL.findall(banner)} == {port}
        assert "8080" not in banner
        assert banner.count("uv run") == banner.count("python3 -m uv run") >= 4
        [agent] = [line for line in banner.splitlines() if "examples/agent/agent.py" in line]
        assert f"python3 -m uv run lkps dev agent --url {base} " in agent
        # The default connection is direct, where the registration helper below counts.
        assert f"  agents         direct (present {ttl} s after" in banner

        # The registration helper it names holds the agent present (while the "Try it"
        # commands run, however slowly, and past the TTL), and takes it away on SIGTERM
        # (`kill %1`) as on Ctrl-C.
        [register] = [line.strip() for line in banner.splitlines() if "dev register" in line]
        assert f"--url {base}" in register
        log = tmp_path / "register.log"
        with log.open("w") as output:
            helper = subprocess.Popen(
                ["bash", "-c", f"exec {register}"], env=shell, cwd=tmp_path,
                stdout=output, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
        try:
            wait_until_ready(
                lambda: "registered agent" in log.read_text(),
                running=lambda: helper.poll() is None,
                what="lkps dev register",
                timeout=120,
                log=log.read_text,
            )
            tried = run_shell(indented_block(banner, "Try it"), shell, tmp_path)
            assert tried.returncode == 0, tried.stderr
            assert '"registration_id"' in tried.stdout
            assert ROOM.search(tried.stdout), tried.stdout

            user = run_lkps("dev", "token", "--user", "alice", env=instance, cwd=tmp_path)
            time.sleep(ttl + 2)  # the curl registration above has lapsed by now
            assert session_status(base, user.stdout.strip()) == 200
        finally:
            helper.terminate()
            helper.wait(timeout=30)
        assert helper.returncode == 0, log.read_text()
        assert "deregistered agent" in log.read_text()
        assert session_status(base, user.stdout.strip()) == 404


def test_the_readme_walkthrough_works_as_printed_at_a_readers_pace(tmp_path: Path) -> None:
    ttl = 6
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    shell = newcomer_shell()
    readme = (ROOT / "README.md").read_text().split("## The API by hand", 1)[1]
    walkthrough = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    # The one change: this instance's port instead of the default.
    assert "127.0.0.1:8080" in walkthrough
    lines = walkthrough.replace("127.0.0.1:8080", f"127.0.0.1:{port}").splitlines()
    # Step 3 wants a token pasted from step 2's answer; the reader takes longer than the
    # presence TTL between steps 1 and 2.
    [paste] = [line for line in lines if "<participant_token>" in line]
    step_2 = lines.index(next(line for line in lines if line.startswith("# 2.")))
    script = [*lines[:step_2], f"sleep {ttl + 12}", *lines[step_2:]]
    script.remove(paste)
    instance = clean_environment(LKPS_PRESENCE_TTL=str(ttl), LKPS_HEARTBEAT_INTERVAL="1")
    with lkps_process(
        "dev", "--port", str(port), env=instance, cwd=tmp_path, health_url=f"{base}/api/health"
    ):
        walked = run_shell("\n".join([*script, "wait"]), shell, tmp_path)
        user = run_lkps("dev", "token", "--user", "alice", env=instance, cwd=tmp_path)
        after = session_status(base, user.stdout.strip())
    assert walked.returncode == 0, walked.stderr
    assert ROOM.search(walked.stdout), walked.stdout + walked.stderr
    assert "registered agent" in walked.stdout
    assert "audit chain intact" in walked.stdout
    assert "deregistered agent" in walked.stdout  # step 5
    assert after == 404


def test_dev_register_says_when_no_instance_answers(tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = run_lkps("dev", "register", "--url", nowhere, env=clean_environment(), cwd=tmp_path)
    assert result.returncode == 1
    assert f"cannot reach LKPS at {nowhere}" in result.stderr
    assert "Traceback" not in result.stderr


def test_dev_register_refuses_a_non_dev_environment(tmp_path: Path) -> None:
    result = run_lkps("dev", "register", env=clean_environment(LKPS_ENV="np"), cwd=tmp_path)
    assert result.returncode == 2
    assert "only runs with LKPS_ENV=dev" in result.stderr
