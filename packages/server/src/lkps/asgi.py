"""`lkps.asgi:app_from_environment`: what uvicorn workers import under `lkps serve`."""

from __future__ import annotations

from fastapi import FastAPI

from lkps.app import create_app
from lkps.config import Settings
from lkps.logs import configure_logging


def app_from_environment() -> FastAPI:
    settings = Settings()
    settings.check_servable()
    configure_logging(settings.log_level)
    return create_app(settings)
