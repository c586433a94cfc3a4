"""OpenAPI helpers: bodies read by `read_json_body`, the contract's error responses, and
the finishing touches that make the generated document say what LKPS actually answers."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from lkps.api.schemas import ErrorBody

_DESCRIPTIONS = {
    400: "The request body is invalid",
    401: "The access token is missing or invalid",
    403: "The caller may not do this",
    404: "Not found",
    413: "The request body is too large",
    415: "The request body is not JSON",
    429: "Too many requests from this client app, user or agent; see Retry-After",
    500: "Unexpected failure",
    503: "The store or the authorization source is unavailable; retry later",
}

# Headers LKPS sets, as OpenAPI header objects: on every response, and per status.
REQUEST_ID_HEADER: dict[str, Any] = {
    "description": (
        "The request's id, also in the error body, the log and the audit record: the "
        "caller's `X-Request-ID` when it matches `[A-Za-z0-9._:-]{1,64}`, a new one otherwise"
    ),
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,64}$"},
}
RETRY_AFTER_HEADER: dict[str, Any] = {
    "description": "Seconds to wait before retrying",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}
WWW_AUTHENTICATE_HEADER: dict[str, Any] = {
    "description": 'Always `Bearer error="invalid_token"`',
    "required": True,
    "schema": {"type": "string", "enum": ['Bearer error="invalid_token"']},
}
STATUS_HEADERS: dict[str, dict[str, dict[str, Any]]] = {
    "401": {"WWW-Authenticate": WWW_AUTHENTICATE_HEADER},
    "429": {"Retry-After": RETRY_AFTER_HEADER},
    "503": {"Retry-After": RETRY_AFTER_HEADER},
}

# What FastAPI adds for its own request validation, which LKPS never answers: bad input
# is a 400 with the contract's body (`lkps.api.errors`).
_VALIDATION_STATUS = "422"
_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}

# Where pydantic's JSON Schema puts the models a body nests.
_DEFS = "#/$defs/"


def json_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": _inlined(model.model_json_schema())}},
        }
    }


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with its nested models written out where they are used: pydantic refers
    to them under the schema's own `$defs`, which a `$ref` inside an OpenAPI document
    resolves against the document instead. (No request body is recursive.)"""
    definitions: dict[str, Any] = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(item) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_DEFS):
            siblings = {key: value for key, value in node.items() if key != "$ref"}
            node = definitions[ref.removeprefix(_DEFS)] | siblings
        return {key: inline(value) for key, value in node.items()}

    result: dict[str, Any] = inline(schema)
    return result


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": ErrorBody, "description": _DESCRIPTIONS[status]} for status in statuses
    }


def finish_document(document: dict[str, Any]) -> dict[str, Any]:
    """Drop FastAPI's phantom 422s and document the response headers; in place."""
    for path_item in document.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in _METHODS:
                continue
            responses: dict[str, Any] = operation.get("responses", {})
            responses.pop(_VALIDATION_STATUS, None)
            for status, response in responses.items():
                headers = response.setdefault("headers", {})
                headers["X-Request-ID"] = REQUEST_ID_HEADER
                headers.update(STATUS_HEADERS.get(str(status), {}))
    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    for name in _VALIDATION_SCHEMAS:  # HTTPValidationError first: it refers to the other
        if f'"#/components/schemas/{name}"' not in json.dumps(document):
            schemas.pop(name, None)
    return document


def install_openapi(app: FastAPI) -> None:
    """Serve `finish_document` of what FastAPI generates (built once, then cached)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = finish_document(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
