"""`/playground`: the page, its assets (livekit-client vendored, checked against its
README), its Content-Security-Policy, and the sign-in with hostile bodies. Only `lkps dev`
installs it; here it is installed on the test's LKPS with a sign-in backed by the test's
Entra double. In a real browser with a real livekit-server: tests/e2e/test_playground.py."""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser
from importlib.resources import files

import pytest

from lkps.api.playground import ASSETS, PLAYGROUND_PATH, install_playground
from tests.conftest import AGENT, CLIENT_A, Lkps

pytestmark = [pytest.mark.api, pytest.mark.backends("sqlite")]

STATIC = files("lkps.api").joinpath("static", "playground")
LIVEKIT_URL = "ws://127.0.0.1:7880"


class FakeSignIn:
    """DevSignIn over the test's Entra double, with the test's API audience."""

    def __init__(self, lkps: Lkps) -> None:
        self.lkps = lkps

    def user_token(self, user: str, client_id: str) -> str:
        return self.lkps.user_token(user, client=client_id)

    def auditor_token(self) -> str:
        return self.lkps.app_token(CLIENT_A, roles=["LKPS.Auditor"])


@pytest.fixture
def playground(lkps: Lkps) -> Lkps:
    install_playground(
        lkps.app, FakeSignIn(lkps), livekit_url=LIVEKIT_URL, agent_id=AGENT, client_id=CLIENT_A
    )
    return lkps


class _Page(HTMLParser):
    """The tags and attributes of a page, and whether any script or style is inline."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self.labelled: set[str] = set()
        self.controls: set[str] = set()
        self._tag = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self._tag = tag
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]
        self.inline += [name for name, _ in attrs if name == "style" or name.startswith("on")]
        if tag == "label" and attributes.get("for"):
            self.labelled.add(str(attributes["for"]))
        if tag in ("input", "textarea", "meter") and attributes.get("type") != "hidden":
            self.controls.add(str(attributes.get("id")))

    def handle_data(self, data: str) -> None:
        if self._tag in ("script", "style") and data.strip():
            self.inline.append(self._tag)


async def test_the_page_loads_only_lkps_assets_and_no_inline_code(playground: Lkps) -> None:
    response = await playground.http.get(PLAYGROUND_PATH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = _Page()
    page.feed(response.text)
    assert page.inline == []
    assert sorted(url for url in page.urls if not url.startswith("#")) == sorted(
        f"{PLAYGROUND_PATH}/{name}" for name in ASSETS
    )
    assert "://" not in response.text  # no CDN, no absolute URL
    # Every input has a label (accessibility), and the dev defaults are filled in.
    assert page.controls <= page.labelled, page.controls - page.labelled
    assert f'data-agent-id="{AGENT}"' in response.text
    assert f'value="{CLIENT_A}"' in response.text
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe-inline" not in policy
    assert f"connect-src 'self' {LIVEKIT_URL} http://127.0.0.1:7880;" in policy
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(("name", "content_type"), list(ASSETS.items()))
async def test_each_asset_is_served_with_its_type_and_the_policy(
    playground: Lkps, name: str, content_type: str
) -> None:
    response = await playground.http.get(f"{PLAYGROUND_PATH}/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert "content-security-policy" in response.headers
    assert len(response.content) > 1000


@pytest.mark.parametrize("name", ["index.html", "vendor", "LICENSE", "..%2f__init__.py", "x.js"])
async def test_nothing_else_is_served(playground: Lkps, name: str) -> None:
    response = await playground.http.get(f"{PLAYGROUND_PATH}/{name}")
    assert response.status_code == 404
    assert set(response.json()) == {"error", "message", "request_id"}


def test_the_vendored_livekit_client_matches_its_readme() -> None:
    vendor = STATIC.joinpath("vendor")
    readme = vendor.joinpath("README.md").read_text()
    assert re.search(r"`livekit-client@(\d+\.\d+\.\d+)`", readme)
    listed = dict(
        (name, digest)
        for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, re.MULTILINE)
    )
    assert set(listed) == {"livekit-client.umd.js", "LICENSE"}
    for name, digest in listed.items():
        assert hashlib.sha256(vendor.joinpath(name).read_bytes()).hexdigest() == digest, name
    assert "Apache License" in vendor.joinpath("LICENSE").read_text()


async def test_sign_in_hands_out_the_dev_tokens(playground: Lkps) -> None:
    response = await playground.http.post(
        f"{PLAYGROUND_PATH}/sign-in", json={"user": "bob.smith", "client_id": CLIENT_A.upper()}
    )
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert set(tokens) == {"user_token", "auditor_token"}
    assert response.headers["cache-control"] == "no-store"
    # The user token is one LKPS accepts: the session start fails only for want of an agent.
    started = await playground.start_session(token=tokens["user_token"])
    assert started.status_code == 404, started.text
    listed = await playground.http.get(
        "/api/agents", headers={"Authorization": f"Bearer {tokens['auditor_token']}"}
    )
    assert listed.status_code == 200, listed.text


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ('{"user": "a b", "client_id": "' + CLIENT_A + '"}', 400, "user:"),
        ('{"user": "' + "a" * 65 + '", "client_id": "' + CLIENT_A + '"}', 400, "user:"),
        ('{"user": "<script>", "client_id": "' + CLIENT_A + '"}', 400, "user:"),
        ('{"user": "alice", "client_id": "not-a-uuid"}', 400, "client_id"),
        ('{"user": "alice"}', 400, "client_id"),
        ('{"user": 7, "client_id": "' + CLIENT_A + '"}', 400, "user"),
        ("[]", 400, "JSON object"),
        ("{", 400, "not valid JSON"),
        (
            '{"user": "alice", "user": "bob", "client_id": "' + CLIENT_A + '"}',
            400,
            "more than once",
        ),
        ("{" + '"x": "' + "y" * 2000 + '"}', 413, ""),
    ],
)
async def test_sign_in_refuses_bad_bodies_with_the_contract_error(
    playground: Lkps, body: str, status: int, says: str
) -> None:
    response = await playground.http.post(
        f"{PLAYGROUND_PATH}/sign-in", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    answer = response.json()
    assert set(answer) == {"error", "message", "request_id"}
    assert says in answer["message"]


async def test_lkps_serve_has_no_playground(lkps: Lkps) -> None:
    assert (await lkps.http.get(PLAYGROUND_PATH)).status_code == 404
    assert (await lkps.http.post(f"{PLAYGROUND_PATH}/sign-in", json={})).status_code == 404
