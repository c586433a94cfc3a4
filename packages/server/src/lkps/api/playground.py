"""`/playground`: a web page on `lkps dev` to talk to an agent without writing a client.

Sign in as a dev user (user name and client app of one's choosing), see the agents,
start a session with metadata typed as JSON, join the room with livekit-client, and
watch participants, data messages, audio levels and the session's lifecycle steps.

Only `lkps dev` installs it: signing in mints tokens from the development identity
provider (`DevSignIn`, supplied by `lkps dev`), which no other instance has. Everything
the page loads is LKPS's own (package data under `static/playground/`, livekit-client
vendored with its licence and checksums in `vendor/README.md`): it works offline and
behind a proxy that blocks CDNs, and under the Content-Security-Policy it is served
with, which allows scripts, styles and connections to this origin and to the dev
LiveKit server only (no inline script or style).
"""

from __future__ import annotations

import html
import re
import uuid
from functools import cache
from importlib.resources import files
from typing import Protocol

from fastapi import FastAPI
from pydantic import BaseModel, Field, field_validator
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from lkps.api.body import read_json_body
from lkps.errors import NotFound

PLAYGROUND_PATH = "/playground"
# The files served under PLAYGROUND_PATH, and their content types.
ASSETS = {
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
    "livekit-client.umd.js": "text/javascript; charset=utf-8",
}
_VENDORED = {"livekit-client.umd.js": ("vendor", "livekit-client.umd.js")}
_STATIC = ("static", "playground")
_SIGN_IN_MAX_BYTES = 1024
_USER_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class DevSignIn(Protocol):
    """What signing in needs from the development identity provider."""

    def user_token(self, user: str, client_id: str) -> str:
        """A delegated access token of `user` signed in to client app `client_id`."""
        ...

    def auditor_token(self) -> str:
        """An app-only token with the auditor role: the page lists agents and reads a
        session's steps with it, as an operator's console would."""
        ...


class SignInRequest(BaseModel):
    user: str = Field(description="User name: letters, digits, `_`, `.`, `-` (up to 64)")
    client_id: str = Field(description="The client app signed in to (an app id, a UUID)")

    @field_validator("user")
    @classmethod
    def _user_name(cls, value: str) -> str:
        if not _USER_NAME.fullmatch(value):
            raise ValueError("user: 1 to 64 letters, digits, '_', '.' or '-'")
        return value

    @field_validator("client_id")
    @classmethod
    def _app_id(cls, value: str) -> str:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError("client_id: an app id (a UUID)") from None


def content_security_policy(livekit_url: str) -> str:
    """This origin for everything, plus the LiveKit server for connections (its
    WebSocket and the HTTP checks livekit-client makes on a failed connect)."""
    http_url = "http" + livekit_url.removeprefix("ws") if livekit_url.startswith("ws") else ""
    connect = " ".join(filter(None, ["'self'", livekit_url, http_url]))
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src {connect}; media-src 'self' blob: mediastream:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    )


@cache
def asset_bytes(name: str) -> bytes:
    """One of ASSETS (or the page), read once from the installed package."""
    return files("lkps.api").joinpath(*_STATIC, *_VENDORED.get(name, (name,))).read_bytes()


def page(*, agent_id: str, client_id: str) -> str:
    """The page, with the dev agent and client app as its defaults (data attributes:
    the script reads them; no inline script)."""
    text = asset_bytes("index.html").decode()
    return text.replace("{{agent_id}}", html.escape(agent_id)).replace(
        "{{client_id}}", html.escape(client_id)
    )


def install_playground(
    app: FastAPI, sign_in: DevSignIn, *, livekit_url: str, agent_id: str, client_id: str
) -> None:
    """Serve the playground at PLAYGROUND_PATH (`lkps dev` only)."""
    headers = {
        "Content-Security-Policy": content_security_policy(livekit_url),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        # The microphone for this page only; no other powerful feature at all.
        "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
    }
    body = page(agent_id=agent_id, client_id=client_id)

    async def playground_page() -> HTMLResponse:
        return HTMLResponse(body, headers={**headers, "Cache-Control": "no-store"})

    async def playground_asset(name: str) -> Response:
        content_type = ASSETS.get(name)
        if content_type is None:
            raise NotFound("Not Found")  # as the router says it
        return Response(
            asset_bytes(name),
            media_type=content_type,
            headers={**headers, "Cache-Control": "no-cache"},
        )

    async def playground_sign_in(request: Request) -> JSONResponse:
        asked = await read_json_body(request, SignInRequest, max_bytes=_SIGN_IN_MAX_BYTES)
        return JSONResponse(
            {
                "user_token": sign_in.user_token(asked.user, asked.client_id),
                "auditor_token": sign_in.auditor_token(),
            },
            headers={**headers, "Cache-Control": "no-store"},
        )

    app.add_api_route(PLAYGROUND_PATH, playground_page, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        PLAYGROUND_PATH + "/sign-in", playground_sign_in, methods=["POST"], include_in_schema=False
    )
    app.add_api_route(
        PLAYGROUND_PATH + "/{name}", playground_asset, methods=["GET"], include_in_schema=False
    )
