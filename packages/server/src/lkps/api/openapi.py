"""OpenAPI helpers: bodies read by `read_json_body` and the contract's error responses."""

from __future__ import annotations

from typing import Any

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


def json_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": ErrorBody, "description": _DESCRIPTIONS[status]} for status in statuses
    }
