"""`lkps dev` runs a real livekit-server beside LKPS: one key pair, webhooks to LKPS,
loopback only, one terminal, and Ctrl-C stops both."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from pathlib import Path

import httpx
import pytest
from livekit import api

from lkps.cli.dev import DEV_AGENT_ID, DEV_LIVEKIT_KEY, DEV_LIVEKIT_SECRET
from lkps.cli.livekit_dev import HOW_TO_GET_ONE, LKPS_PREFIX, PREFIX
from tests.processes import (
    answers_200,
    clean_environment,
    free_port,
    lkps_process,
    process_output,
    run_lkps,
    wait_until_ready,
)
from tests.realserver.conftest import find_binary

pytestmark = pytest.mark.cli

LIVEKIT_LINE = re.compile(r"^  LiveKit +ws://127\.0\.0\.1:(\d+) ", re.MULTILINE)
LIVEKIT_PID = re.compile(r"livekit-server \S+ \(pid (\d+);")


def without_livekit_on_path() -> dict[str, str]:
    """This environment, minus any LKPS_ variable and any livekit-server on PATH."""
    env = clean_environment()
    env["PATH"] = os.pathsep.join(
        folder
        for folder in env.get("PATH", "").split(os.pathsep)
        if not (Path(folder) / "livekit-server").exists()
    )
    return env


def socket_addresses(pid: int) -> set[str]:
    """The local addresses (hex, as /proc/net shows them) of `pid`'s TCP and UDP sockets
    that listen or are bound (Linux)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    addresses = set()
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for row in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = row.split()
            # TCP: only listening sockets (state 0A); UDP: every bound one.
            if fields[9] in inodes and (table.startswith("udp") or fields[3] == "0A"):
                addresses.add(fields[1].rpartition(":")[0])
    return addresses


LOOPBACK_HEX = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return "Z"


@pytest.mark.filterwarnings("ignore:The HMAC key is:jwt.warnings.InsecureKeyLengthWarning")
def test_dev_runs_a_livekit_server_wired_to_lkps_and_ctrl_c_stops_both(tmp_path: Path) -> None:
    binary = find_binary()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = without_livekit_on_path() | {"LKPS_LIVEKIT_SERVER_BIN": str(binary)}
    with lkps_process(
        "dev", "--port", str(port), "--livekit-port", "0",
        env=env, cwd=tmp_path, health_url=f"{base}/api/health",
    ) as lkps:  # fmt: skip
        banner = process_output(tmp_path)
        found = LIVEKIT_LINE.search(banner)
        assert found, banner
        livekit_port = int(found.group(1))
        assert livekit_port not in (port, 7880)
        pid_found = LIVEKIT_PID.search(banner)
        assert pid_found, banner
        livekit_pid = int(pid_found.group(1))
        livekit_http = f"http://127.0.0.1:{livekit_port}"
        wait_until_ready(
            lambda: answers_200(livekit_http, timeout=1),
            running=lambda: lkps.poll() is None and alive(livekit_pid),
            what="livekit-server",
            timeout=60,
            log=lambda: process_output(tmp_path),
        )

        # The same key pair: LiveKit accepts what the dev instance signs with.
        async def rooms() -> int:
            async with api.LiveKitAPI(livekit_http, DEV_LIVEKIT_KEY, DEV_LIVEKIT_SECRET) as lk:
                return len((await lk.room.list_rooms(api.ListRoomsRequest())).rooms)

        assert asyncio.run(rooms()) == 0
        # Agents are told to connect to it.
        agent_token = run_lkps(
            "dev", "token", "--agent", DEV_AGENT_ID, env=env, cwd=tmp_path
        ).stdout.strip()
        registered = httpx.post(
            f"{base}/api/agent/register", headers={"Authorization": f"Bearer {agent_token}"}
        )
        assert registered.status_code == 200, registered.text
        assert registered.json()["livekit_url"] == f"ws://127.0.0.1:{livekit_port}"
        # Webhooks go to LKPS; the config holds the secret, so only its owner reads it.
        config_file = tmp_path / "var/dev/livekit.yaml"
        config = json.loads(config_file.read_text())
        assert config["webhook"]["urls"] == [f"{base}/api/livekit/webhook"]
        assert config_file.stat().st_mode & 0o077 == 0
        # Loopback only: whatever it listens on is 127.0.0.1.
        addresses = socket_addresses(livekit_pid)
        assert addresses, "livekit-server holds no socket"
        assert addresses <= LOOPBACK_HEX, addresses

        # Ctrl-C in the terminal: SIGINT to LKPS stops both.
        lkps.send_signal(signal.SIGINT)
        assert lkps.wait(timeout=60) == 0, process_output(tmp_path)
    assert not alive(livekit_pid)
    output = process_output(tmp_path)
    assert "livekit | " in output and "starting LiveKit server" in output
    assert "livekit | livekit-server exited with status 0" in output
    assert HOW_TO_GET_ONE not in output
    assert "not started by lkps dev" not in output
    # LKPS's own lines are named too, aligned with livekit-server's, and still JSON.
    assert len(LKPS_PREFIX) == len(PREFIX)
    records = lkps_records(output, LKPS_PREFIX)
    assert "Application startup complete." in [record["message"] for record in records]


def lkps_records(output: str, prefix: str) -> list[dict[str, object]]:
    """LKPS's log records in `output`: every line that carries one starts with `prefix`
    and the rest of it is one JSON object."""
    lines = [line for line in output.splitlines() if '"logger": ' in line]
    assert lines, output
    assert all(line.startswith(prefix + "{") for line in lines), lines
    return [json.loads(line.removeprefix(prefix)) for line in lines]


def test_dev_without_a_binary_says_how_to_get_one_and_serves(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = without_livekit_on_path()
    with lkps_process(
        "dev", "--port", str(port), env=env, cwd=tmp_path, health_url=f"{base}/api/health"
    ):
        output = process_output(tmp_path)
    assert output.count(HOW_TO_GET_ONE) == 1
    assert "ws://127.0.0.1:7880" in output
    assert "livekit | " not in output
    assert "(not started by lkps dev: agents and the playground need it running)" in output
    # LKPS alone in its terminal: bare JSON lines, as `lkps serve` writes them.
    assert lkps_records(output, "")


def test_dev_no_livekit_keeps_todays_behaviour(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # A binary that would fail loudly if it were started.
    fake = tmp_path / "livekit-server"
    fake.write_text("#!/bin/sh\necho STARTED >&2\nexit 3\n")
    fake.chmod(0o755)
    env = without_livekit_on_path() | {"LKPS_LIVEKIT_SERVER_BIN": str(fake)}
    with lkps_process(
        "dev", "--port", str(port), "--no-livekit",
        env=env, cwd=tmp_path, health_url=f"{base}/api/health",
    ):  # fmt: skip
        output = process_output(tmp_path)
    assert "STARTED" not in output and "livekit | " not in output
    assert HOW_TO_GET_ONE not in output
    assert "ws://127.0.0.1:7880" in output
    assert not (tmp_path / "var/dev/livekit.yaml").exists()
