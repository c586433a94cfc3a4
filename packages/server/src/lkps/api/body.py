"""Reading a JSON request body without trusting it.

FastAPI's own body parsing would answer some hostile bodies (invalid UTF-8, a
thousand-deep nesting, a 10,000-digit number) with a 500 or a generic 422; LKPS owes
each of them a 4xx with the contract's body and a message that says what is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from starlette.requests import ClientDisconnect, Request

from lkps.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class JsonBodies:
    """Reads request bodies within the deployment's limit (LKPS_MAX_BODY_BYTES)."""

    max_bytes: int

    async def read(self, request: Request, model: type[ModelT], *, required: bool = True) -> ModelT:
        return await read_json_body(request, model, max_bytes=self.max_bytes, required=required)


async def read_json_body(
    request: Request, model: type[ModelT], *, max_bytes: int, required: bool = True
) -> ModelT:
    raw = await _read_limited(request, max_bytes)
    if not raw.strip():
        if required:
            raise BadRequest("The request body is required (a JSON object)")
        raw = b"{}"
    elif not _is_json(request.headers.get("content-type")):
        raise UnsupportedMediaType("The request body must be application/json")
    try:
        document = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise BadRequest("The request body is not valid UTF-8") from None
    except RecursionError:
        raise BadRequest("The request body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, integers too long to parse
        raise BadRequest(f"The request body is not valid JSON: {_short(exc)}") from None
    if not isinstance(document, dict):
        raise BadRequest("The request body must be a JSON object")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise BadRequest(describe_validation_error(exc.errors()[0])) from None


async def _read_limited(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > max_bytes:
                raise _too_large(max_bytes)
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(max_bytes)
            chunks.append(chunk)
    except ClientDisconnect:
        # The caller went away mid-body: its fault, not ours (a 400, audited as such).
        raise BadRequest("The request body ended before it was complete") from None
    return b"".join(chunks)


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than {max_bytes} bytes")


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return True  # curl -d without -H; the body still has to parse as JSON
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _short(exc: ValueError) -> str:
    text = str(exc)
    return text if len(text) <= 120 else text[:117] + "..."


def describe_validation_error(error: ErrorDetails) -> str:
    """One clear sentence for the first thing wrong with a body."""
    field = ".".join(str(part) for part in error["loc"]) or "body"
    kind = error["type"]
    if kind == "missing":
        return f'"{field}" is required'
    if kind in {"uuid_type", "uuid_parsing", "uuid_version"}:
        return f'"{field}" must be a UUID'
    if kind in {"dict_type", "model_type", "model_attributes_type"}:
        return f'"{field}" must be a JSON object'
    if kind in {"bool_type", "bool_parsing"}:
        return f'"{field}" must be true or false'
    if kind == "string_type":
        return f'"{field}" must be a string'
    if kind == "string_too_long":
        return f'"{field}" must be at most {error.get("ctx", {}).get("max_length")} characters'
    if kind == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    return f'"{field}" is invalid: {error["msg"]}'
