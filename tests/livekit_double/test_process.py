"""`python -m lkps_testkit.livekit` as a real process, as end-to-end tests run it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from livekit import api
from livekit.protocol import room as room_pb

pytestmark = pytest.mark.e2e

SECRET = "a-process-secret-that-is-comfortably-long"
READY = "LIVEKIT_DOUBLE_URL="


@pytest.fixture
def double_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """The double on a port of its choosing, its secret from the environment."""
    env = {**os.environ, "LIVEKIT_API_SECRET": SECRET}
    process = subprocess.Popen(
        [sys.executable, "-m", "lkps_testkit.livekit", "--port", "0", "--api-key", "e2ekey"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once it accepts connections
        assert line.startswith(READY), line + (process.stderr.read() if process.stderr else "")
        yield process, line.removeprefix(READY).strip()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_the_process_serves_livekit_and_its_controls(
    double_process: tuple[subprocess.Popen[str], str],
) -> None:
    process, url = double_process
    http_url = url.replace("ws://", "http://")
    async with api.LiveKitAPI(url, "e2ekey", SECRET) as lkapi:
        await lkapi.room.create_room(room_pb.CreateRoomRequest(name="demo", max_participants=1))
        token = (
            api.AccessToken("e2ekey", SECRET)
            .with_identity("alice")
            .with_grants(api.VideoGrants(room_join=True, room="demo"))
            .to_jwt()
        )
        async with httpx.AsyncClient(base_url=http_url) as http:
            joined = await http.post("/_double/join", json={"token": token})
            assert joined.status_code == 200, joined.text
            participants = await lkapi.room.list_participants(
                room_pb.ListParticipantsRequest(room="demo")
            )
            assert [p.identity for p in participants.participants] == ["alice"]
            state = (await http.get("/_double/state")).json()
            assert [r["max_participants"] for r in state["rooms"]] == [1]

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0


def test_the_process_needs_a_secret() -> None:
    env = {k: v for k, v in os.environ.items() if k != "LIVEKIT_API_SECRET"}
    result = subprocess.run(
        [sys.executable, "-m", "lkps_testkit.livekit", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "an API secret is required" in result.stderr
