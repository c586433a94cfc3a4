"""Reading a JSON request body without trusting it.

FastAPI's own body parsing would answer some hostile bodies (invalid UTF-8, a
thousand-deep nesting, a 10,000-digit number) with a 500 or a generic 422; LKPS owes
each of them a 4xx with the contract's body and a message that says what is wrong.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Collection
from dataclasses import dataclass
from json import JSONDecodeError
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from starlette.requests import ClientDisconnect, Request

from lkps.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from lkps.sessions.metadata import JSON_DECODER, DuplicateKey, NotJson, printable_key

ModelT = TypeVar("ModelT", bound=BaseModel)

_WHITESPACE = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True, slots=True)
class JsonText:
    """A top-level value of a body as read, and the JSON text it was read from: what
    `read_json_body` hands the model, for the fields named in its `json_text`, instead of
    the value alone (the text of the client's metadata is what its agent receives)."""

    value: Any
    text: str


@dataclass(frozen=True, slots=True)
class JsonBodies:
    """Reads request bodies within the deployment's limit (LKPS_MAX_BODY_BYTES)."""

    max_bytes: int

    async def read(
        self,
        request: Request,
        model: type[ModelT],
        *,
        required: bool = True,
        json_text: Collection[str] = (),
    ) -> ModelT:
        """See `read_json_body`; `json_text` names members kept as the client's text."""
        return await read_json_body(
            request, model, max_bytes=self.max_bytes, required=required, json_text=json_text
        )


async def read_json_body(
    request: Request,
    model: type[ModelT],
    *,
    max_bytes: int,
    required: bool = True,
    json_text: Collection[str] = (),
) -> ModelT:
    """The body, validated as `model`. JSON is read strictly: NaN, Infinity and a key
    repeated in one object (at any depth) are refused. The top-level values named in
    `json_text` reach the model as `JsonText`, read once."""
    raw = await read_limited(request, max_bytes)
    if not raw.strip():
        if required:
            raise BadRequest("The request body is required (a JSON object)")
        raw = b"{}"
    elif not _is_json(request.headers.get("content-type")):
        raise UnsupportedMediaType("The request body must be application/json")
    try:
        text = raw.decode("utf-8")
        document, spans = _read_object(text)
    except UnicodeDecodeError:
        raise BadRequest("The request body is not valid UTF-8") from None
    except RecursionError:
        raise BadRequest("The request body is nested too deeply") from None
    except JSONDecodeError as exc:
        raise BadRequest(
            f"The request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except NotJson as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}") from None
    except ValueError:  # what is left: an integer longer than Python converts
        raise BadRequest(
            "The request body is not valid JSON: a number has more than "
            f"{sys.get_int_max_str_digits()} digits"
        ) from None
    for name in json_text:
        if name in document:
            start, end = spans[name]
            document[name] = JsonText(document[name], text[start:end])
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise BadRequest(describe_validation_error(exc.errors()[0])) from None


async def read_limited(request: Request, max_bytes: int) -> bytes:
    """The raw body, refused (413) past `max_bytes` whatever Content-Length says."""
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


def _read_object(text: str) -> tuple[dict[str, Any], dict[str, tuple[int, int]]]:
    """The JSON object `text` holds, and where each of its values' text is in it.

    Walks the outer object (`json`'s own parser reads each key and value, in C) so that
    a value's text is known without a second parse. Raises `JSONDecodeError` as
    `json.loads` would, `BadRequest` for a repeated key or a body that is no object."""
    index = _skip_whitespace(text, 0)
    if not text.startswith("{", index):
        JSON_DECODER.decode(text)  # raises what is wrong, if anything
        raise BadRequest("The request body must be a JSON object")
    document: dict[str, Any] = {}
    spans: dict[str, tuple[int, int]] = {}
    index = _skip_whitespace(text, index + 1)
    if text.startswith("}", index):
        _expect_end(text, index + 1)
        return document, spans
    while True:
        if not text.startswith('"', index):
            raise JSONDecodeError("Expecting property name enclosed in double quotes", text, index)
        key, index = JSON_DECODER.raw_decode(text, index)
        index = _skip_whitespace(text, index)
        if not text.startswith(":", index):
            raise JSONDecodeError("Expecting ':' delimiter", text, index)
        start = _skip_whitespace(text, index + 1)
        try:
            value, index = JSON_DECODER.raw_decode(text, start)
        except DuplicateKey as exc:
            raise BadRequest(f'"{printable_key(key)}" {exc}') from None
        if key in document:
            raise BadRequest(f"The request body {DuplicateKey(printable_key(key))}")
        document[key] = value
        spans[key] = (start, index)
        index = _skip_whitespace(text, index)
        if text.startswith(",", index):
            index = _skip_whitespace(text, index + 1)
        elif text.startswith("}", index):
            _expect_end(text, index + 1)
            return document, spans
        else:
            raise JSONDecodeError("Expecting ',' delimiter", text, index)


def _skip_whitespace(text: str, index: int) -> int:
    match = _WHITESPACE.match(text, index)
    assert match is not None  # `*` matches the empty string
    return match.end()


def _expect_end(text: str, index: int) -> None:
    """`JSONDecodeError` for anything but whitespace after the object."""
    end = _skip_whitespace(text, index)
    if end != len(text):
        raise JSONDecodeError("Extra data", text, end)


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
        cause = error.get("ctx", {}).get("error", error["msg"])
        if isinstance(cause, UnicodeError):  # a codec's words, not the API's
            return f'"{field}" must be valid Unicode text'
        return str(cause)
    return f'"{field}" is invalid: {error["msg"]}'
