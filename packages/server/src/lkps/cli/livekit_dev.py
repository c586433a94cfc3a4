"""The livekit-server that `lkps dev` runs beside LKPS, so that a laptop needs one command.

Which binary: `LKPS_LIVEKIT_SERVER_BIN`, else `livekit-server` on PATH, else the newest one
`scripts/livekit-server` built under `./.cache/livekit/bin/`. It runs in dev mode
(`--dev`, which is what lets it take `livekit-server --dev`'s short key pair) with a
generated config:

- the API key pair LKPS signs with, and webhooks signed with it to LKPS's
  `/api/livekit/webhook`;
- loopback only: signalling bound to 127.0.0.1, ICE on the `lo` interface with
  `node_ip` 127.0.0.1 and no external IP discovery. ICE over TCP is off: livekit-server
  (v1.13.5, mediatransportutil's `NewWebRTCConfig`) binds its TCP port on every
  interface whatever `bind_addresses` says, and on one machine UDP over the loopback
  always works;
- the signalling port 7880 and the UDP port 7882 (as `livekit-server --dev`) when they
  are free, other free ports when they are taken (`--livekit-port 0`: free ones always).

Its output goes to the same terminal, each line prefixed `livekit | ` (LKPS's own log
lines then `lkps    | `); it runs in a
process group of its own (the terminal's Ctrl-C reaches LKPS, which stops it after
uvicorn has stopped), and on Linux it is also told to stop if `lkps dev` dies outright.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

BINARY_NAME = "livekit-server"
BUILT_BINARIES = Path(".cache/livekit/bin")  # where scripts/livekit-server puts them
DEFAULT_HTTP_PORT = 7880  # `livekit-server --dev`'s signalling port
DEFAULT_UDP_PORT = 7882  # and its ICE UDP port
LOOPBACK = "127.0.0.1"
WEBHOOK_PATH = "/api/livekit/webhook"


def line_prefix(name: str) -> str:
    """What each line of one process's output starts with in `lkps dev`'s terminal: its
    name, padded so that LKPS's lines and livekit-server's line up."""
    return f"{name:<7} | "


PREFIX = line_prefix("livekit")
LKPS_PREFIX = line_prefix("lkps")  # LKPS's own log lines while it runs livekit-server
HOW_TO_GET_ONE = (
    "no livekit-server found (LKPS_LIVEKIT_SERVER_BIN, PATH, ./.cache/livekit/bin), and "
    "agents and the playground need one: build it once with `scripts/livekit-server` "
    "(Go >= 1.26, online, about 3 minutes), or run `lkps dev --no-livekit` beside your own"
)
STOP_TIMEOUT = 10.0
# What livekit-server would read as configuration from the environment, overriding ours.
_SERVER_VARIABLES = ("LIVEKIT_", "NODE_IP", "UDP_PORT", "REDIS_")


class LiveKitUnavailable(Exception):
    """No usable binary; the message says why and how to get one."""


def find_binary(configured: Path | None, *, cwd: Path, path: str | None) -> Path:
    """The livekit-server to run: `configured` (LKPS_LIVEKIT_SERVER_BIN) must be one;
    else one on `path`; else the newest under `cwd/.cache/livekit/bin`."""
    if configured is not None:
        if configured.is_file() and os.access(configured, os.X_OK):
            return configured
        raise LiveKitUnavailable(
            f"LKPS_LIVEKIT_SERVER_BIN={configured} is not an executable file: "
            "point it at a livekit-server binary, or build one with `scripts/livekit-server`"
        )
    on_path = shutil.which(BINARY_NAME, path=path)
    if on_path:
        return Path(on_path)
    built = [
        candidate
        for candidate in (cwd / BUILT_BINARIES).glob(f"{BINARY_NAME}-v*")
        if candidate.is_file() and os.access(candidate, os.X_OK)
    ]
    if built:
        return max(built, key=_release)
    raise LiveKitUnavailable(HOW_TO_GET_ONE)


def _release(binary: Path) -> tuple[int, ...]:
    """`livekit-server-v1.13.5` -> (1, 13, 5), so that v1.13.10 sorts after v1.13.5."""
    return tuple(int(number) for number in re.findall(r"\d+", binary.name.rpartition("-v")[2]))


def port_or_free(preferred: int, kind: socket.SocketKind) -> int:
    """`preferred` when nothing holds it on the loopback, else a free port the kernel
    picks (0 always picks one). Another process may still take it before livekit-server
    binds it: then livekit-server says so in its output."""
    with socket.socket(socket.AF_INET, kind) as probe:
        if preferred:
            try:
                probe.bind((LOOPBACK, preferred))
                return preferred
            except OSError:
                pass
        with socket.socket(socket.AF_INET, kind) as free:
            free.bind((LOOPBACK, 0))
            port: int = free.getsockname()[1]
            return port


@dataclass(frozen=True)
class LiveKitPlan:
    """One livekit-server to run: its binary and ports, and what it must agree on with LKPS."""

    binary: Path
    http_port: int
    udp_port: int

    @classmethod
    def choose(cls, binary: Path, http_port: int) -> LiveKitPlan:
        """Ports for the server: `http_port` (7880 by default) and 7882 for ICE, each
        replaced by a free one when taken; with `http_port` 0, free ones for both."""
        return cls(
            binary=binary,
            http_port=port_or_free(http_port, socket.SOCK_STREAM),
            udp_port=port_or_free(DEFAULT_UDP_PORT if http_port else 0, socket.SOCK_DGRAM),
        )

    @property
    def url(self) -> str:
        """Where agents and clients reach it (LKPS's LKPS_LIVEKIT_URL)."""
        return f"ws://{LOOPBACK}:{self.http_port}"

    def config(self, *, api_key: str, api_secret: str, webhook_url: str) -> dict[str, object]:
        """livekit-server's configuration (JSON, which its YAML parser reads)."""
        return {
            "port": self.http_port,
            "bind_addresses": [LOOPBACK],
            "rtc": {
                "udp_port": self.udp_port,
                "tcp_port": 0,  # see the module's docstring
                "node_ip": LOOPBACK,
                "use_external_ip": False,
                "enable_loopback_candidate": True,
                "interfaces": {"includes": ["lo"]},
            },
            "keys": {api_key: api_secret},
            "webhook": {"api_key": api_key, "urls": [webhook_url]},
            "turn": {"enabled": False},
            "logging": {"level": "info"},
        }


def webhook_url(host: str, port: int) -> str:
    """LKPS's webhook endpoint as livekit-server on this machine reaches it."""
    reachable = LOOPBACK if host in ("0.0.0.0", "", "::") else host  # noqa: S104
    if ":" in reachable:
        reachable = f"[{reachable}]"
    return f"http://{reachable}:{port}{WEBHOOK_PATH}"


class LiveKitProcess:
    """livekit-server as a child of `lkps dev`: started with a config file in
    `state_dir`, its output copied to `out` line by line behind PREFIX, stopped by `stop`."""

    def __init__(
        self, plan: LiveKitPlan, config: Mapping[str, object], state_dir: Path, out: IO[str]
    ) -> None:
        self.plan = plan
        self._config = dict(config)
        self._state_dir = state_dir
        self._out = out
        self._process: subprocess.Popen[bytes] | None = None
        self._pump: threading.Thread | None = None

    def start(self) -> None:
        self._state_dir.mkdir(parents=True, exist_ok=True)
        config_file = self._state_dir / "livekit.yaml"
        # It holds the API secret: readable by the owner only, as the dev signing key.
        config_file.touch(mode=0o600)
        config_file.chmod(0o600)
        config_file.write_text(json.dumps(self._config, indent=2))
        environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(_SERVER_VARIABLES)
        }
        self._process = subprocess.Popen(  # noqa: S603 (the binary the developer chose)
            [str(self.plan.binary), "--dev", "--config", str(config_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,  # Ctrl-C reaches LKPS only; it stops this in order
            preexec_fn=_stop_with_parent if sys.platform == "linux" else None,
        )
        self._pump = threading.Thread(target=self._copy_output, name="livekit-output", daemon=True)
        self._pump.start()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def _copy_output(self) -> None:
        process = self._process
        assert process is not None
        assert process.stdout is not None
        for raw in process.stdout:
            self._write(raw.decode(errors="replace").rstrip("\n"))
        status = process.wait()
        self._write(f"livekit-server exited with status {status}")

    def _write(self, line: str) -> None:
        try:
            self._out.write(f"{PREFIX}{line}\n")
            self._out.flush()
        except (OSError, ValueError):  # the terminal went away: nothing left to tell
            pass

    def stop(self) -> None:
        """SIGTERM, then SIGKILL for its group if it has not ended within STOP_TIMEOUT
        (livekit-server waits for participants to leave on SIGTERM)."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._pump is not None:
            self._pump.join(timeout=STOP_TIMEOUT)


def _stop_with_parent() -> None:
    """In the child, before exec (Linux): SIGTERM when `lkps dev` itself dies, so that a
    killed dev instance leaves no server holding its ports."""
    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
