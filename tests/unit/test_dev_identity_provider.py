"""`lkps dev`'s identity provider gives any agent id an app-only token for the public dev
secret (`lkps dev agent --agent ID`), and nothing for a wrong secret or a name that is not
an app id."""

from __future__ import annotations

from pathlib import Path

import httpx
import jwt
import pytest

from lkps.cli.dev import DEV_AGENT_ID, DEV_APP_SECRET, identity_provider
from lkps.config import DEV_AUDIENCE, DEV_TENANT_ID

pytestmark = pytest.mark.unit

OTHER_AGENT = "5b8f5b1e-7a4c-4e0e-9d7e-0d6c2f3a9b10"


async def token_for(state_dir: Path, client_id: str, secret: str) -> httpx.Response:
    idp = identity_provider(state_dir)
    transport = httpx.ASGITransport(app=idp.asgi_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://idp.test") as http:
        return await http.post(
            f"/{DEV_TENANT_ID}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": secret,
                "scope": f"{DEV_AUDIENCE}/.default",
            },
        )


@pytest.mark.parametrize("client_id", [DEV_AGENT_ID, OTHER_AGENT, OTHER_AGENT.upper()])
async def test_any_app_id_gets_a_token_for_the_dev_secret(tmp_path: Path, client_id: str) -> None:
    answer = await token_for(tmp_path, client_id, DEV_APP_SECRET)
    assert answer.status_code == 200, answer.text
    claims = jwt.decode(answer.json()["access_token"], options={"verify_signature": False})
    assert claims["azp"] == client_id and claims["idtyp"] == "app"


@pytest.mark.parametrize(
    ("client_id", "secret", "status"),
    [
        (OTHER_AGENT, "not-the-dev-secret", 401),
        (DEV_AGENT_ID, "not-the-dev-secret", 401),
        ("my-agent", DEV_APP_SECRET, 400),
        ("", DEV_APP_SECRET, 400),
    ],
)
async def test_a_wrong_secret_or_a_non_app_id_gets_nothing(
    tmp_path: Path, client_id: str, secret: str, status: int
) -> None:
    answer = await token_for(tmp_path, client_id, secret)
    assert answer.status_code == status, answer.text
    assert "access_token" not in answer.json()
