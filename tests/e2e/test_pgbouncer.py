"""LKPS behind PgBouncer, the pooler docs/deployment.md suggests when LKPS's connection
pools outgrow `max_connections`: a real PgBouncer (Debian's, installed by
scripts/services) in front of the test database.

LKPS asks for READ COMMITTED in its connections' startup parameters, which PgBouncer
refuses unless told to ignore them; ignored, the role's or database's default applies,
and `lkps serve` checks that it is READ COMMITTED before serving.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from lkps.app import create_app
from lkps.config import ConfigurationError, Settings
from lkps.store.engine import isolation_on, on_one_connection
from tests.backends import StoreSql, TestDatabase, service_missing
from tests.conftest import Lkps
from tests.processes import free_port, started_process

pytestmark = [pytest.mark.e2e, pytest.mark.backends("postgresql")]

STARTUP_PARAMETER = "default_transaction_isolation"


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if found is None:
        service_missing("PgBouncer", "PATH or /usr/sbin", FileNotFoundError("pgbouncer"))
        raise AssertionError("unreachable")
    return found


def accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@contextmanager
def running_pgbouncer(server_url: str, *, ignore_startup_parameter: bool) -> Iterator[int]:
    """PgBouncer in session mode on a free port, in front of `server_url`'s server; its
    port. Session mode: transaction mode needs a PgBouncer that keeps asyncpg's prepared
    statements (1.21 or later, `max_prepared_statements`), and Debian 12 ships 1.18."""
    server = make_url(server_url)
    port = free_port()
    # PgBouncer will not run as root; as root it is started as postgres (which Debian's
    # PostgreSQL package creates), so its files must be readable by that user.
    folder = Path(tempfile.mkdtemp(prefix="lkps-pgbouncer-"))
    folder.chmod(0o755)
    users = folder / "users.txt"
    users.write_text(f'"{server.username}" "{server.password}"\n')
    config = folder / "pgbouncer.ini"
    ignored = f"ignore_startup_parameters = {STARTUP_PARAMETER}\n" * ignore_startup_parameter
    config.write_text(
        "[databases]\n"
        f"* = host={server.host} port={server.port}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {users}\n"
        "pool_mode = session\nserver_tls_sslmode = prefer\n" + ignored
    )
    for path in (users, config):
        path.chmod(0o644)
    as_postgres = ["-u", "postgres"] if os.geteuid() == 0 else []
    try:
        with started_process(
            [pgbouncer_binary(), *as_postgres, str(config)],
            log_path=folder / "pgbouncer.log",
            ready=lambda: accepts_connections(port),
            what="pgbouncer",
            timeout=15,
        ):
            yield port
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pooled_url(request: pytest.FixtureRequest, database: TestDatabase) -> Iterator[str]:
    """The test database's URL through PgBouncer; indirect parameter: whether PgBouncer
    ignores LKPS's startup parameter (by default it does, as docs/deployment.md says)."""
    ignore = getattr(request, "param", True)
    with running_pgbouncer(database.url, ignore_startup_parameter=ignore) as port:
        yield make_url(database.url).set(port=port).render_as_string(hide_password=False)


@pytest.fixture
def settings_values(settings_values: dict[str, Any], pooled_url: str) -> dict[str, Any]:
    return {**settings_values, "database_url": pooled_url}


async def test_lkps_serves_through_pgbouncer(lkps: Lkps, store_sql: StoreSql) -> None:
    assert (await lkps.register(enforce_client_authz=False)).status_code == 200
    tokens = [lkps.user_token(f"user{i}") for i in range(30)]
    responses = await asyncio.gather(*(lkps.start_session(token=token) for token in tokens))
    assert [r.status_code for r in responses] == [200] * 30
    assert (await lkps.http.get("/api/health/ready")).status_code == 200
    assert (await lkps.services.audit.verify()).ok
    assert await store_sql.scalar("SELECT count(*) FROM audit_records") == 31


@pytest.mark.parametrize("pooled_url", [False], indirect=True, ids=["refused"])
async def test_a_pooler_refusing_the_startup_parameter_fails_closed(lkps: Lkps) -> None:
    """What LKPS does behind a PgBouncer not told to ignore the parameter: no token, no
    500; readiness says the store is the problem."""
    ready = await lkps.http.get("/api/health/ready")
    assert ready.status_code == 503
    assert "store" in ready.text
    register = await lkps.register(enforce_client_authz=False)
    assert register.status_code == 503, register.text
    started = await lkps.start_session()
    assert started.status_code == 503, started.text
    assert "participant_token" not in started.json()


async def test_lkps_refuses_to_start_where_the_pooler_dropped_read_committed(
    settings: Settings, database: TestDatabase, store_sql: StoreSql, pooled_url: str
) -> None:
    name = make_url(database.url).database
    await store_sql.execute(f"ALTER DATABASE {name} SET {STARTUP_PARAMETER} TO 'serializable'")
    # Straight to the server, LKPS's startup parameter wins over the database's default;
    # through PgBouncer, which ignores it, the default applies.
    assert await on_one_connection(database.url, isolation_on) == "read committed"
    assert await on_one_connection(pooled_url, isolation_on) == "serializable"
    app = create_app(settings)
    with pytest.raises(ConfigurationError, match="ALTER ROLE lkps SET default_transaction"):
        async with app.router.lifespan_context(app):
            pass
