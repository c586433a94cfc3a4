"""A page on another origin calls LKPS from a real headless Chromium: with its origin in
LKPS_CORS_ALLOW_ORIGINS the page reads the answer (body and X-Request-ID, errors too);
without, the browser refuses the call (a TypeError in the page)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from lkps.app import create_app
from lkps.config import Settings
from lkps_testkit import EntraDouble, ServerThread
from tests.browser import Browser
from tests.conftest import AGENT, API_AUDIENCE, CLIENT_A

pytestmark = [pytest.mark.e2e, pytest.mark.backends("sqlite")]

# The page's own script: POST /api/session/start as a browser client would, and report
# what the page could see. A fetch the browser refuses rejects with a TypeError.
PAGE = """<!DOCTYPE html>
<html><head><title>another origin</title></head><body>
<script>
async function startSession(base, token, agent) {
  try {
    const response = await fetch(base + "/api/session/start", {
      method: "POST",
      headers: {
        "Authorization": "Bearer " + token,
        "Content-Type": "application/json",
        "X-Request-ID": "browser-page-1",
      },
      body: JSON.stringify({agent_entra_app_id: agent}),
    });
    return {
      status: response.status,
      requestId: response.headers.get("X-Request-ID"),
      body: await response.json(),
    };
  } catch (error) {
    return {error: error.name, message: error.message};
  }
}
</script>
</body></html>
"""


async def _page(_: object) -> HTMLResponse:
    return HTMLResponse(PAGE)


@pytest.fixture
def page_server() -> Iterator[ServerThread]:
    """The page, served from its own origin: http://127.0.0.1:<another free port>."""
    with ServerThread(Starlette(routes=[Route("/", _page)])) as server:
        yield server


def served_lkps(settings_values: dict[str, Any], entra: EntraDouble, origins: str) -> ServerThread:
    settings = Settings(**{**settings_values, "cors_allow_origins": origins})
    settings.check_servable()
    return ServerThread(create_app(settings))


def register_agent(base: str, entra: EntraDouble) -> None:
    token = entra.app_token(audience=API_AUDIENCE, client_app_id=AGENT)
    response = httpx.post(
        f"{base}/api/agent/register",
        json={"enforce_client_authz": True},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text


async def start_session_from_page(
    browser: Browser, page: ServerThread, lkps: ServerThread, token: str
) -> dict[str, Any]:
    call = f"startSession({json.dumps(lkps.url)}, {json.dumps(token)}, {json.dumps(AGENT)})"
    result: dict[str, Any] = await browser.evaluate_in(f"{page.url}/", call)
    return result


async def test_a_page_on_an_allowed_origin_reads_the_answer_and_its_request_id(
    browser: Browser,
    page_server: ServerThread,
    settings_values: dict[str, Any],
    entra: EntraDouble,
) -> None:
    with served_lkps(settings_values, entra, page_server.url) as lkps:
        assert lkps.url != page_server.url  # another origin: another port
        register_agent(lkps.url, entra)
        token = entra.user_token(client_app_id=CLIENT_A, username="alice", audience=API_AUDIENCE)
        result = await start_session_from_page(browser, page_server, lkps, token)
        assert result.get("status") == 200, result
        assert result["requestId"] == "browser-page-1"
        assert result["body"]["participant_token"]
        assert result["body"]["room_name"]

        # An error is readable too: the page learns why, and which request it was.
        result = await start_session_from_page(browser, page_server, lkps, "not-a-token")
        assert result.get("status") == 401, result
        assert result["body"]["error"] == "invalid_token"
        assert result["body"]["request_id"] == result["requestId"] == "browser-page-1"


@pytest.mark.parametrize("origins", ["", "https://app.example.com"])
async def test_a_page_on_an_origin_not_allowed_is_refused_by_the_browser(
    browser: Browser,
    page_server: ServerThread,
    settings_values: dict[str, Any],
    entra: EntraDouble,
    origins: str,
) -> None:
    with served_lkps(settings_values, entra, origins) as lkps:
        register_agent(lkps.url, entra)
        token = entra.user_token(client_app_id=CLIENT_A, username="alice", audience=API_AUDIENCE)
        result = await start_session_from_page(browser, page_server, lkps, token)
        assert result == {"error": "TypeError", "message": "Failed to fetch"}
