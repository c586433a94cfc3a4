"""Issue 13: one accepted spelling of agent ids (and every other UUID LKPS reads) on every
endpoint: the canonical hyphenated form, either case, normalized to lower case. Braces,
`urn:uuid:`, no hyphens and surrounding whitespace are refused everywhere alike."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest
from livekit.api import TokenVerifier

from tests.conftest import AGENT, CLIENT_B, Lkps

pytestmark = pytest.mark.api


def other_spellings(value: str) -> dict[str, str]:
    """What `uuid.UUID` reads as `value` but the canonical form does not allow."""
    return {
        "braces": "{" + value + "}",
        "urn": "urn:uuid:" + value,
        "no hyphens": value.replace("-", ""),
        "leading space": " " + value,
        "trailing newline": value + "\n",
        "short": value[:-1],
    }


REFUSED = other_spellings(AGENT)
UPPER = AGENT.upper()


def admin(lkps: Lkps) -> str:
    return lkps.user_token("ops.admin", roles=["LKPS.Admin"])


def auditor(lkps: Lkps) -> str:
    return lkps.user_token("ops.auditor", roles=["LKPS.Auditor"])


def bad_request(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "bad_request"
    return str(response.json()["message"])


@pytest.fixture
async def present(lkps: Lkps) -> Lkps:
    assert (await lkps.register(AGENT, enforce_client_authz=False)).status_code == 200
    return lkps


async def token_request(lkps: Lkps, agent: str) -> httpx.Response:
    body = {"room_config": {"agents": [{"agent_name": agent}]}}
    return await lkps.post("/api/session/token", lkps.user_token(), body)


@pytest.mark.parametrize("form", REFUSED)
async def test_session_start_refuses_other_spellings(present: Lkps, form: str) -> None:
    message = bad_request(await present.start_session(REFUSED[form]))
    assert message == '"agent_entra_app_id" must be a UUID'


@pytest.mark.parametrize("form", REFUSED)
async def test_token_endpoint_refuses_other_spellings(present: Lkps, form: str) -> None:
    message = bad_request(await token_request(present, REFUSED[form]))
    assert message == '"room_config.agents[0].agent_name" must be the agent\'s app id (a UUID)'


async def test_both_session_endpoints_take_upper_case_as_the_lower_case_id(
    present: Lkps, livekit_verifier: TokenVerifier
) -> None:
    for response in (await present.start_session(UPPER), await token_request(present, UPPER)):
        assert response.status_code in (200, 201), response.text
        body = response.json()
        assert f"-{AGENT}-" in body["room_name"]
        config = livekit_verifier.verify(body["participant_token"]).room_config
        assert config is not None and config.agents[0].agent_name == AGENT


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize("form", REFUSED)
async def test_admin_routes_refuse_other_spellings(lkps: Lkps, method: str, form: str) -> None:
    response = await lkps.http.request(
        method,
        f"/api/agents/{quote(REFUSED[form], safe='')}/authorization",
        headers={"Authorization": f"Bearer {admin(lkps)}"},
        json={"enforce_client_authz": False} if method == "PUT" else None,
    )
    assert bad_request(response) == '"path.agent_id" must be a UUID'


async def test_admin_routes_take_upper_case_as_the_lower_case_id(lkps: Lkps) -> None:
    headers = {"Authorization": f"Bearer {admin(lkps)}"}
    path = f"/api/agents/{UPPER}/authorization"
    response = await lkps.http.put(path, headers=headers, json={"enforce_client_authz": False})
    assert response.status_code == 200, response.text
    assert response.json()["agent_id"] == AGENT
    fetched = await lkps.http.get(f"/api/agents/{AGENT}/authorization", headers=headers)
    assert fetched.json()["agent_id"] == AGENT
    assert (await lkps.http.delete(path, headers=headers)).status_code == 204


@pytest.mark.parametrize("form", REFUSED)
async def test_audit_filter_refuses_other_spellings(lkps: Lkps, form: str) -> None:
    response = await lkps.http.get(
        "/api/audit",
        params={"agent_id": REFUSED[form]},
        headers={"Authorization": f"Bearer {auditor(lkps)}"},
    )
    assert bad_request(response) == '"query.agent_id" must be a UUID'


async def test_audit_filter_takes_upper_case_as_the_lower_case_id(present: Lkps) -> None:
    response = await present.http.get(
        "/api/audit",
        params={"agent_id": UPPER},
        headers={"Authorization": f"Bearer {auditor(present)}"},
    )
    assert response.status_code == 200, response.text
    records = response.json()["records"]
    assert records and {record["agent_id"] for record in records} == {AGENT}


async def test_registration_ids_follow_the_same_rule(lkps: Lkps) -> None:
    registered = await lkps.register(AGENT, enforce_client_authz=False)
    registration_id: str = registered.json()["registration_id"]
    for form in other_spellings(registration_id).values():
        for call in (lkps.register, lkps.heartbeat, lkps.deregister):
            message = bad_request(await call(AGENT, registration_id=form))
            assert message == '"registration_id" must be a UUID', call
    renewed = await lkps.register(
        AGENT, registration_id=registration_id.upper(), enforce_client_authz=False
    )
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["registration_id"] == registration_id
    heartbeat = await lkps.heartbeat(AGENT, registration_id=registration_id.upper())
    assert heartbeat.status_code == 200, heartbeat.text


@pytest.mark.parametrize("form", REFUSED)
async def test_additional_clients_follow_the_same_rule(lkps: Lkps, form: str) -> None:
    clients = [other_spellings(CLIENT_B)[form]]
    response = await lkps.http.put(
        f"/api/agents/{AGENT}/authorization",
        headers={"Authorization": f"Bearer {admin(lkps)}"},
        json={"additional_clients": clients},
    )
    assert bad_request(response) == '"additional_clients" must be client app ids (UUIDs)'


async def test_the_document_states_the_pattern_wherever_an_id_is_read(lkps: Lkps) -> None:
    document = (await lkps.http.get("/api/openapi.json")).json()

    def schema(path: str, method: str) -> Any:
        body = document["paths"][path][method]["requestBody"]["content"]["application/json"]
        return body["schema"]

    def resolve(node: Any) -> Any:
        if "$ref" in node:
            return document["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
        return next((item for item in node.get("anyOf", []) if item != {"type": "null"}), node)

    pattern = document["paths"]["/api/agents/{agent_id}/authorization"]["get"]["parameters"]
    found = [resolve(p["schema"]) for p in pattern if p["name"] == "agent_id"]
    audit = document["paths"]["/api/audit"]["get"]["parameters"]
    found += [resolve(p["schema"]) for p in audit if p["name"] == "agent_id"]
    start = resolve(schema("/api/session/start", "post"))["properties"]
    found.append(resolve(start["agent_entra_app_id"]))
    for path in ("/api/agent/register", "/api/agent/heartbeat", "/api/agent/deregister"):
        found.append(resolve(resolve(schema(path, "post"))["properties"]["registration_id"]))
    assert len(found) == 6
    patterns = {(item.get("format"), item.get("pattern")) for item in found}
    assert len(patterns) == 1, patterns
    ((fmt, regex),) = patterns
    assert fmt == "uuid" and regex is not None and regex.startswith("^[0-9a-fA-F]{8}-")
