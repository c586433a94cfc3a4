"""`/api/docs` renders in a real headless Chromium that can reach no host but LKPS on
127.0.0.1: Swagger UI comes from the package, not a CDN."""

from __future__ import annotations

from typing import Any

import pytest

from lkps.app import create_app
from lkps.config import Settings
from lkps_testkit import ServerThread
from tests.browser import Browser

pytestmark = [pytest.mark.e2e, pytest.mark.backends("sqlite")]

# Runs after the page's load event: Swagger UI's bundle has run by then (or failed to
# load), and it renders the document's title once it has fetched /api/openapi.json.
RENDERED_TITLE = """
typeof SwaggerUIBundle === "undefined" ? "Swagger UI did not load" : new Promise((resolve) => {
  const check = () => {
    const title = document.querySelector(".swagger-ui .info .title");
    if (title) resolve(title.textContent); else setTimeout(check, 50);
  };
  check();
})
"""


async def test_the_docs_page_renders_without_the_internet(
    browser: Browser, settings_values: dict[str, Any]
) -> None:
    with ServerThread(create_app(Settings(**settings_values))) as lkps:
        title = await browser.evaluate_in(f"{lkps.url}/api/docs", RENDERED_TITLE)
    assert isinstance(title, str) and title.startswith("LiveKit Platform Service"), title
