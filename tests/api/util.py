"""Starting an LKPS with settings a test changed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from lkps.app import create_app
from lkps.config import Settings
from tests.conftest import Lkps


@asynccontextmanager
async def running_lkps(
    settings: Settings | dict[str, Any], clock: Any, entra: Any, **app_options: Any
) -> AsyncIterator[Lkps]:
    if isinstance(settings, dict):
        settings = Settings(**settings)
    app = create_app(settings, clock=clock, **app_options)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://lkps.test") as http:
            yield Lkps(app, http, entra)
