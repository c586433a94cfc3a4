"""`/api/docs`: Swagger UI over the OpenAPI document, with its assets served by LKPS.

FastAPI's page loads Swagger UI from a CDN (and a favicon from fastapi.tiangolo.com), so
it was blank offline, behind a strict proxy, or under a Content-Security-Policy that
allows only the page's own origin. LKPS ships `swagger-ui-dist`'s bundle, stylesheet
and favicon as package data (`static/swagger-ui/`, version and checksums in its
README) and serves them under `/api/docs/`. The validator badge, which Swagger UI
fetches from validator.swagger.io, is turned off. No ReDoc page is served.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from lkps.errors import NotFound

DOCS_PATH = "/api/docs"
# The files served under DOCS_PATH, and their content types.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
_ASSET_DIRECTORY = ("static", "swagger-ui")
# The assets change only with LKPS's version; an hour keeps an upgrade visible soon.
_ASSET_CACHE_CONTROL = "public, max-age=3600"


@cache
def asset_bytes(name: str) -> bytes:
    """One of ASSETS, read once from the installed package."""
    return files("lkps.api").joinpath(*_ASSET_DIRECTORY, name).read_bytes()


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI at DOCS_PATH (create the app with `docs_url=None`)."""
    openapi_url = app.openapi_url
    assert openapi_url, "the docs page needs the OpenAPI document"
    title = f"{app.title} - Swagger UI"

    async def docs_page(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=title,
            swagger_js_url=f"{root}{DOCS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_PATH}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},
        )

    async def docs_asset(name: str) -> Response:
        content_type = ASSETS.get(name)
        if content_type is None:
            raise NotFound("Not Found")  # as the router says it
        return Response(
            asset_bytes(name),
            media_type=content_type,
            headers={"Cache-Control": _ASSET_CACHE_CONTROL},
        )

    app.add_api_route(DOCS_PATH, docs_page, methods=["GET"], include_in_schema=False)
    app.add_api_route(DOCS_PATH + "/{name}", docs_asset, methods=["GET"], include_in_schema=False)
