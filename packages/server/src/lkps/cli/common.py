"""Helpers shared by the commands."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
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
    }
