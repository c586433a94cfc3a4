"""Running `lkps` as a real process on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

LKPS = [sys.executable, "-m", "lkps"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_environment(**variables: str) -> dict[str, str]:
    """The parent's environment without any LKPS_ variable, plus `variables`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LKPS_")}
    env.update(variables)
    return env


def run_lkps(*args: str, env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LKPS, *args], env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=60
    )


@contextmanager
def lkps_process(
    *args: str, env: Mapping[str, str], cwd: Path, health_url: str
) -> Iterator[subprocess.Popen[str]]:
    """Start `lkps ARGS`, wait until `health_url` answers, stop it with SIGTERM."""
    log = (cwd / "lkps-process.log").open("w")
    process = subprocess.Popen(
        [*LKPS, *args], env=dict(env), cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"lkps exited early:\n{(cwd / 'lkps-process.log').read_text()}")
            try:
                if httpx.get(health_url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("lkps did not become healthy in 30 s")
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def process_output(cwd: Path) -> str:
    return (cwd / "lkps-process.log").read_text()
