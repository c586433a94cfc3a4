"""The served OpenAPI document says what LKPS answers: no phantom 422, the response
headers LKPS sets, the formats and limits of what it accepts, and every method of each
resource in a 405's `Allow`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lkps.ids import UUID_PATTERN
from tests.conftest import AGENT, Lkps

pytestmark = [pytest.mark.api, pytest.mark.backends("sqlite")]

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


async def document(lkps: Lkps) -> dict[str, Any]:
    response = await lkps.http.get("/api/openapi.json")
    assert response.status_code == 200
    spec: dict[str, Any] = response.json()
    return spec


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def body_schema(spec: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    operation = spec["paths"][path][method]
    schema: dict[str, Any] = operation["requestBody"]["content"]["application/json"]["schema"]
    return schema


def non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """The one non-null branch of an `anyOf: [X, null]`, or the schema itself."""
    branches: list[dict[str, Any]] = [
        s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"
    ]
    assert len(branches) == 1, schema
    return branches[0]


async def test_no_422_anywhere(lkps: Lkps) -> None:
    """Bad input is a 400 with the contract's body; FastAPI's 422 is never answered."""
    spec = await document(lkps)
    for method, path, operation in operations(spec):
        assert "422" not in operation["responses"], (method, path)
    text = json.dumps(spec)
    assert "HTTPValidationError" not in text
    assert "#/components/schemas/ValidationError" not in text
    assert "ValidationError" not in spec["components"]["schemas"]


async def test_a_parameter_error_is_400_not_the_documented_422(lkps: Lkps) -> None:
    response = await lkps.http.get(
        "/api/agents/not-a-uuid/authorization",
        headers={"Authorization": f"Bearer {lkps.user_token(roles=['LKPS.Admin'])}"},
    )
    assert response.status_code == 400
    assert set(response.json()) == {"error", "message", "request_id"}


async def test_every_response_documents_its_headers(lkps: Lkps) -> None:
    spec = await document(lkps)
    seen: set[str] = set()
    for method, path, operation in operations(spec):
        for status, response in operation["responses"].items():
            where = (method, path, status)
            headers = response.get("headers", {})
            request_id = headers.get("X-Request-ID")
            assert request_id is not None, where
            assert request_id["required"] is True
            assert request_id["schema"]["type"] == "string"
            expected = {"X-Request-ID"}
            if status == "401":
                expected.add("WWW-Authenticate")
                assert headers["WWW-Authenticate"]["schema"]["enum"] == [
                    'Bearer error="invalid_token"'
                ]
            if status in {"429", "503"}:
                expected.add("Retry-After")
                assert headers["Retry-After"]["schema"]["type"] == "integer"
                assert headers["Retry-After"]["required"] is True
            assert set(headers) == expected, where
            seen.add(status)
    assert {"200", "204", "401", "429", "503"} <= seen  # the walk saw each kind


async def test_documented_headers_are_sent(lkps: Lkps) -> None:
    unauthenticated = await lkps.http.get("/api/agents")
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert unauthenticated.headers["x-request-id"]
    health = await lkps.http.get("/api/health")
    assert health.headers["x-request-id"]


async def test_uuids_and_limits_are_in_the_request_schemas(lkps: Lkps) -> None:
    spec = await document(lkps)
    start = body_schema(spec, "post", "/api/session/start")["properties"]
    assert start["agent_entra_app_id"]["format"] == "uuid"
    assert non_null(start["metadata"])["maxProperties"] == 50

    register = body_schema(spec, "post", "/api/agent/register")["properties"]
    assert non_null(register["registration_id"])["format"] == "uuid"
    assert non_null(register["version"])["maxLength"] == 128
    assert non_null(register["metadata"])["maxProperties"] == 50
    for path in ("/api/agent/heartbeat", "/api/agent/deregister"):
        properties = body_schema(spec, "post", path)["properties"]
        assert non_null(properties["registration_id"])["format"] == "uuid", path

    clients = body_schema(spec, "put", "/api/agents/{agent_id}/authorization")["properties"][
        "additional_clients"
    ]
    assert clients["items"] == {"type": "string", "format": "uuid", "pattern": UUID_PATTERN}
    assert clients["maxItems"] == 500

    for method in ("get", "put", "delete"):
        (agent_id,) = spec["paths"]["/api/agents/{agent_id}/authorization"][method]["parameters"]
        assert agent_id["schema"]["format"] == "uuid", method
    audit = {p["name"]: p["schema"] for p in spec["paths"]["/api/audit"]["get"]["parameters"]}
    assert non_null(audit["agent_id"])["format"] == "uuid"
    assert non_null(audit["since"])["format"] == "date-time"
    assert non_null(audit["until"])["format"] == "date-time"


async def test_documented_limits_still_give_the_api_messages(lkps: Lkps) -> None:
    """Documenting the limits changed nothing about what is accepted or what is said."""
    admin = {"Authorization": f"Bearer {lkps.user_token(roles=['LKPS.Admin'])}"}
    path = f"/api/agents/{AGENT}/authorization"
    for clients, message in (
        (["not-a-uuid"], '"additional_clients" must be client app ids (UUIDs)'),
        ([AGENT] * 501, '"additional_clients" may list at most 500 clients'),
    ):
        response = await lkps.http.put(path, json={"additional_clients": clients}, headers=admin)
        assert response.status_code == 400, response.text
        assert response.json()["message"] == message
    response = await lkps.http.put(path, json={"additional_clients": [AGENT] * 500}, headers=admin)
    assert response.status_code == 200, response.text
    response = await lkps.start_session(AGENT, metadata={str(n): n for n in range(51)})
    assert response.status_code == 400
    assert response.json()["message"] == '"metadata" has 51 keys; at most 50 are allowed'


async def test_405_allow_names_exactly_the_documented_methods(
    lkps: Lkps, subtests: pytest.Subtests
) -> None:
    spec = await document(lkps)
    for template, item in spec["paths"].items():
        path = template.replace("{agent_id}", AGENT)
        documented = {method.upper() for method in item if method in METHODS}
        for method in {"GET", "POST", "PUT", "PATCH", "DELETE"} - documented:
            with subtests.test(f"{method} {template}"):
                response = await lkps.http.request(method, path)
                assert response.status_code == 405, response.text
                body = response.json()
                assert set(body) == {"error", "message", "request_id"}
                assert body["error"] == "method_not_allowed"
                allowed = response.headers["allow"].split(", ")
                assert set(allowed) == documented
