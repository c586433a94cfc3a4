"""A private PostgreSQL cluster a test may stop and start (the shared server keeps
serving every other test). PostgreSQL refuses to run as root, so the cluster belongs
to the `postgres` OS user and its commands run as that user (`runuser`)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.processes import free_port

PG_BIN = Path(os.environ.get("LKPS_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"
ROLE = "lkps"


def private_cluster_unavailable() -> str | None:
    """Why a private cluster cannot be made here, if it cannot."""
    if not (PG_BIN / "initdb").exists():
        return f"no PostgreSQL server binaries in {PG_BIN}"
    if os.geteuid() != 0:
        return "a private cluster is made as root (initdb runs as the postgres OS user)"
    if shutil.which("runuser") is None:
        return "runuser is missing"
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        return f"no {PG_USER} OS user"
    return None


class PrivatePostgres:
    """initdb into a fresh folder under /tmp (pytest's tmp_path is root's alone), on a
    free port of 127.0.0.1, `trust` for loopback connections: a throwaway cluster."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="lkps-faults-pg-"))
        user = pwd.getpwnam(PG_USER)
        os.chown(self.root, user.pw_uid, user.pw_gid)
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.running = False

    def _run(self, *command: str) -> None:
        result = subprocess.run(
            ["runuser", "-u", PG_USER, "--", *command],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {result.stderr}\n{self.log_text()}")

    def init(self) -> PrivatePostgres:
        self._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            ROLE,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        return self

    def start(self) -> None:
        # fsync off is safe for what this cluster meets (processes stopping, never the
        # machine): the OS keeps what a crashed server wrote. synchronous_commit stays
        # on, so a commit LKPS saw is in the WAL before LKPS answers.
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=30 -c shared_buffers=16MB"
        )
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
        )
        self.running = True

    def stop(self, mode: str = "immediate") -> None:
        """`immediate`: the server processes quit at once, as in a crash; the next start
        recovers from the WAL."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        self.running = False

    def create_database(self, name: str) -> str:
        self._run(
            str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", ROLE, name
        )
        return f"postgresql+asyncpg://{ROLE}@127.0.0.1:{self.port}/{name}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def remove(self) -> None:
        if self.running:
            with contextlib.suppress(RuntimeError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
