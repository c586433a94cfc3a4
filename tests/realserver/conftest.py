"""A real LiveKit server on 127.0.0.1, for the tests that prove LKPS's tokens do what
they claim against LiveKit itself rather than against a double.

The binary is `LKPS_LIVEKIT_SERVER_BIN`, or the release `scripts/livekit-server` builds
into `.cache/livekit/bin/livekit-server-<version>` (the version pinned in that script,
or `LKPS_LIVEKIT_SERVER_VERSION`). Without it the tests are skipped, saying how to get
it; with `LKPS_TEST_REQUIRE_LIVEKIT_SERVER=1` (as in CI) they fail instead.

One server serves the whole session, on free ports, with a generated config: one API key,
no external IP discovery, every address 127.0.0.1. Tests use rooms of their own.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
from livekit import api

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "scripts" / "livekit-server"
BIN_VARIABLE = "LKPS_LIVEKIT_SERVER_BIN"
VERSION_VARIABLE = "LKPS_LIVEKIT_SERVER_VERSION"
REQUIRE_VARIABLE = "LKPS_TEST_REQUIRE_LIVEKIT_SERVER"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
API_KEY = "APIrealserver"


class RealLiveKit(NamedTuple):
    """A running LiveKit server: its signalling URL (`ws://...`) and its one API key."""

    url: str
    api_key: str
    api_secret: str
    # Its log (INFO): what it decided where no API says, e.g. a job it could not place.
    log: Path | None = None

    def log_count(self, pattern: str) -> int:
        """How many lines of its log match the regular expression `pattern`."""
        if self.log is None:
            return 0
        return len(re.findall(pattern, self.log.read_text(errors="replace")))

    @property
    def http_url(self) -> str:
        """The same server for the server APIs (`livekit.api.LiveKitAPI`)."""
        return "http" + self.url.removeprefix("ws")

    async def end_room(self, room: str) -> None:
        """End `room` now rather than after its departure timeout (30 s after the last
        client left), and with it any agent job in it: an agent stopped afterwards has
        no job to drain."""
        async with api.LiveKitAPI(self.http_url, self.api_key, self.api_secret) as lk:
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))


def livekit_server_required() -> bool:
    return os.environ.get(REQUIRE_VARIABLE, "") not in ("", "0")


def pinned_version() -> str:
    """The release `scripts/livekit-server` builds (its `VERSION=` default)."""
    if version := os.environ.get(VERSION_VARIABLE):
        return version
    match = re.search(r"^VERSION=\$\{\w+:-([^}]+)\}", BUILD_SCRIPT.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no pinned VERSION= line in {BUILD_SCRIPT}")
    return match.group(1)


def find_binary() -> Path:
    """The livekit-server binary to run, or a skip (a failure when it is required)."""
    if configured := os.environ.get(BIN_VARIABLE):
        path = Path(configured)
        where = f"{BIN_VARIABLE}={configured}"
    else:
        version = pinned_version()
        path = ROOT / ".cache" / "livekit" / "bin" / f"livekit-server-{version}"
        where = str(path.relative_to(ROOT))
    if path.is_file() and os.access(path, os.X_OK):
        return path
    message = (
        f"no livekit-server binary at {where}; build it with scripts/livekit-server "
        f"(or point {BIN_VARIABLE} at one)"
    )
    if livekit_server_required():
        pytest.fail(f"{message} [{REQUIRE_VARIABLE}=1]", pytrace=False)
    pytest.skip(message)


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_config(http_port: int, api_secret: str) -> dict[str, object]:
    """livekit-server's YAML config (as JSON, which is YAML): loopback only."""
    return {
        "port": http_port,
        "bind_addresses": ["127.0.0.1"],
        "rtc": {
            "tcp_port": free_port(),
            "udp_port": free_port(socket.SOCK_DGRAM),
            "use_external_ip": False,
            "node_ip": "127.0.0.1",
            "enable_loopback_candidate": True,
        },
        "keys": {API_KEY: api_secret},
        "logging": {"level": "info"},
        "turn": {"enabled": False},
    }


def server_environment() -> dict[str, str]:
    """The parent's environment without what livekit-server would read as config."""
    ignored = ("LIVEKIT_", "NODE_IP", "UDP_PORT", "REDIS_")
    return {k: v for k, v in os.environ.items() if not k.startswith(ignored)}


def log_tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until_ready(process: subprocess.Popen[bytes], health_url: str, log: Path) -> None:
    """Until the server answers its health check; raises when it exits or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"livekit-server exited with {process.returncode} while starting:\n{log_tail(log)}"
            )
        try:
            if httpx.get(health_url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"livekit-server did not answer {health_url} within {START_TIMEOUT:.0f} s:\n"
                f"{log_tail(log)}"
            )
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (livekit-server then waits for participants to leave), then SIGKILL."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


@contextmanager
def running_livekit(
    folder: Path, *, http_port: int | None = None, webhook_url: str | None = None
) -> Iterator[RealLiveKit]:
    """A livekit-server with a config of its own under `folder`; with `webhook_url`, its
    webhooks go there, signed with its one API key (as `webhook.urls` in production)."""
    binary = find_binary()
    api_secret = secrets.token_urlsafe(32)
    http_port = http_port or free_port()
    settings = server_config(http_port, api_secret)
    if webhook_url is not None:
        settings["webhook"] = {"api_key": API_KEY, "urls": [webhook_url]}
    config = folder / "livekit.yaml"
    config.write_text(json.dumps(settings, indent=2))
    log = folder / "livekit-server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(binary), "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=server_environment(),
            cwd=folder,
            start_new_session=True,
        )
    try:
        wait_until_ready(process, f"http://127.0.0.1:{http_port}/", log)
        yield RealLiveKit(f"ws://127.0.0.1:{http_port}", API_KEY, api_secret, log)
    finally:
        stop(process)


@pytest.fixture(scope="session")
def livekit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealLiveKit]:
    """A real livekit-server for the session: (url, api_key, api_secret)."""
    with running_livekit(tmp_path_factory.mktemp("livekit-server")) as server:
        yield server
