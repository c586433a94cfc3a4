"""`/api/docs` needs nothing outside LKPS: Swagger UI's assets come from the package.
A real browser rendering it with every other host unreachable: tests/e2e/test_browser_docs.py."""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser
from importlib.resources import files

import httpx
import pytest

from lkps.api.docs import ASSETS
from tests.conftest import Lkps

pytestmark = [pytest.mark.api, pytest.mark.backends("sqlite")]

VENDORED = files("lkps.api").joinpath("static", "swagger-ui")


class _References(HTMLParser):
    """Every `src` and `href` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def references(html: str) -> list[str]:
    parser = _References()
    parser.feed(html)
    return parser.urls


async def test_the_docs_page_refers_only_to_lkps_itself(lkps: Lkps) -> None:
    response = await lkps.http.get("/api/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "://" not in html  # no absolute URL anywhere, scripts included
    assert "validatorUrl" in html and '"validatorUrl": null' in html  # no validator badge
    urls = references(html)
    assert sorted(urls) == sorted(f"/api/docs/{name}" for name in ASSETS)
    assert "url: '/api/openapi.json'" in html


@pytest.mark.parametrize(("name", "content_type"), list(ASSETS.items()))
async def test_each_asset_is_served_with_its_content_type(
    lkps: Lkps, name: str, content_type: str
) -> None:
    response = await lkps.http.get(f"/api/docs/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.content == VENDORED.joinpath(name).read_bytes()
    assert "max-age" in response.headers["cache-control"]


async def test_the_openapi_document_the_page_loads_is_served(lkps: Lkps) -> None:
    response = await lkps.http.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "/api/docs" not in response.json()["paths"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/docs/index.html",
        "/api/docs/LICENSE",
        "/api/docs/README.md",
        "/api/docs/..%2F..%2Fconfig.py",
        "/api/docs/%2e%2e",
        "/api/docs/swagger-ui.css/x",
        "/api/redoc",
        "/docs",
        "/docs/oauth2-redirect",
    ],
)
async def test_nothing_else_is_served(lkps: Lkps, path: str) -> None:
    response = await lkps.http.get(path)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_behind_a_path_prefix_the_page_refers_to_the_prefix(lkps: Lkps) -> None:
    transport = httpx.ASGITransport(app=lkps.app, root_path="/lkps")
    async with httpx.AsyncClient(transport=transport, base_url="http://lkps.test") as http:
        html = (await http.get("/api/docs")).text
    assert sorted(references(html)) == sorted(f"/lkps/api/docs/{name}" for name in ASSETS)
    assert "url: '/lkps/api/openapi.json'" in html


def test_the_vendored_files_match_their_recorded_checksums() -> None:
    readme = VENDORED.joinpath("README.md").read_text()
    recorded = dict(
        (name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, re.M)
    )
    assert set(ASSETS) <= set(recorded)
    assert {"LICENSE", "NOTICE"} <= set(recorded)
    for name, digest in recorded.items():
        assert hashlib.sha256(VENDORED.joinpath(name).read_bytes()).hexdigest() == digest, name
