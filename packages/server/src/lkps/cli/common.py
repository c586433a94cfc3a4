"""Helpers shared by the commands."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError

from lkps.config import ConfigurationError, Settings
from lkps.errors import LKPSError

T = TypeVar("T")


def fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"lkps: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def load_settings() -> Settings:
    try:
        return Settings()
    except ConfigurationError as exc:
        fail(str(exc))
    except ValidationError as exc:
        problems = "; ".join(
            f"LKPS_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        fail(f"invalid configuration: {problems}")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coroutine)
    except ConfigurationError as exc:
        fail(str(exc))
    except LKPSError as exc:
        fail(exc.reason, code=3)


def shown_database(url: str) -> str:
    """Where `url` points, for a message: a SQLite file as its absolute path, any other
    database as its URL with the password hidden."""
    from sqlalchemy.engine import make_url

    path = _sqlite_file(url)
    if path is not None:
        return str(path.resolve())
    return make_url(url).render_as_string(hide_password=True)


def existing_database(settings: Settings, *, elsewhere: str = "") -> str:
    """`settings.database_url`, once it is known to exist. A read-only command must not
    create a store: SQLite makes its file (and LKPS its folder) on the first connection,
    so `lkps audit verify` run in the wrong folder would leave an empty `var/lkps.db`
    behind and report on it. `elsewhere` adds another way to the message (`--url`)."""
    url = settings.database_url
    path = _sqlite_file(url)
    if path is not None and not path.is_file():
        fail(
            f"no LKPS database at {path.resolve()} (LKPS_DATABASE_URL={url}): run this in the "
            f"folder LKPS runs in, or set LKPS_DATABASE_URL{elsewhere}"
        )
    return url


async def read_revision(url: str) -> str | None:
    """The store's schema revision (None: no LKPS schema); a store that cannot be reached
    fails the command with one line naming it, not a traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    from lkps.store.migrate import current_revision

    try:
        return await current_revision(url)
    except (SQLAlchemyError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        fail(f"cannot read the LKPS database at {shown_database(url)}: {reason}")


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases and in-memory SQLite)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    return Path(database.removeprefix("file:").partition("?")[0])


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What `lkps serve` and `lkps dev` both tell uvicorn: where to listen, no access log
    or Server header, and LKPS's HTTP protocol with its limits on request heads."""
    from lkps.http.protocols import uvicorn_protocol

    return {
        "host": settings.host,
        "port": settings.port,
        "http": uvicorn_protocol(settings),
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "timeout_keep_alive": settings.http_keep_alive_seconds,
        # The agent gateway's frames: uvicorn refuses larger ones (1009) before reading them.
        "ws_max_size": settings.agent_gateway_max_message_bytes,
    }
