"""Request metadata: the limits a client must respect, and the exact form the agent gets.

The agent receives the metadata as LiveKit dispatch metadata, a string: the JSON text
the client sent, compacted (whitespace between tokens removed) and nothing else changed:
keys in the client's order, numbers as written (`1.0` stays `1.0`, `1e2` stays `1e2`),
strings with the escapes the client chose (`"\\u00e9"` stays six characters, `"é"` stays
one). A JSON text with a key twice in one object is refused: which value counts would be
up to each parser on the way (Python keeps the last, others the first or both).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

MAX_KEYS = 50
MAX_BYTES = 10_240
MAX_DEPTH = 32

# A maximal run of JSON strings and of characters outside strings other than whitespace:
# joining the runs drops exactly the whitespace between tokens. Valid JSON only (a string
# cannot hold a raw tab, CR or LF, and whitespace outside strings separates tokens whose
# joining would change nothing): the text is parsed before it is compacted.
_TOKEN_RUN = re.compile(r'(?:"[^"\\]*(?:\\.[^"\\]*)*"|[^" \t\n\r]+)+')
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class ClientMetadata:
    """A client's metadata, checked: the compact JSON text its agent receives."""

    text: str


class DuplicateKey(ValueError):
    """A JSON object names `key` twice."""

    def __init__(self, key: str) -> None:
        super().__init__(f'has the key "{key}" more than once')
        self.key = key


def refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook` for `json`: the object, unless a key repeats (`DuplicateKey`)."""
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(printable_key(key))
            seen.add(key)
    return document


class NotJson(ValueError):
    """NaN or Infinity, which Python's parser would take."""


class NotJsonObject(ValueError):
    """Metadata that is not a JSON object (or not JSON at all)."""


def _refuse_constant(name: str) -> Any:
    raise NotJson(f"{name} is not allowed")


# Strict JSON for every body and every metadata string: no NaN/Infinity, no repeated key.
JSON_DECODER = json.JSONDecoder(
    object_pairs_hook=refuse_duplicate_keys, parse_constant=_refuse_constant
)


def compact_json_text(text: str) -> str:
    """`text` (valid JSON) without the whitespace between its tokens, nothing else changed.

    Already compact text, what SDKs send (JSON.stringify), is returned as it is after four
    substring searches; otherwise one regular-expression pass joins the runs between
    whitespace (measured in the issue 13 report: about the cost of parsing the text)."""
    if " " in text or "\n" in text or "\t" in text or "\r" in text:
        return "".join(_TOKEN_RUN.findall(text))
    return text


def client_metadata(value: Any, text: str, *, field: str = "metadata") -> ClientMetadata:
    """The metadata `text` (valid JSON, parsed as `value` by `JSON_DECODER`), checked.

    Raises `ValueError` with a caller-facing message when it is not an object or breaks
    a limit; the limits apply to the compact text, which is what the agent receives."""
    if not isinstance(value, dict):
        raise NotJsonObject(f'"{field}" must be a JSON object')
    compact = compact_json_text(text)
    # Only a \\u escape can put a surrogate into a string read from UTF-8 text.
    _check(value, len(compact.encode()), field, escapes="\\u" in compact)
    return ClientMetadata(compact)


def parse_client_metadata(text: str, *, field: str) -> ClientMetadata:
    """Metadata given as a string holding JSON (LiveKit's dispatch metadata).

    Raises `NotJsonObject` for text that is not a JSON object (the caller words that
    refusal), `ValueError` for a key given twice or `client_metadata`'s refusals."""
    try:
        value = JSON_DECODER.decode(text)
    except DuplicateKey as exc:
        raise ValueError(f'"{field}" {exc}') from None
    except (ValueError, RecursionError):  # RecursionError: nested beyond the parser
        raise NotJsonObject(f'"{field}" must be a JSON object') from None
    return client_metadata(value, text, field=field)


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def check_metadata(metadata: dict[str, Any], *, field: str = "metadata") -> dict[str, Any]:
    """Raise `ValueError` with a caller-facing message when a limit is broken (metadata
    LKPS stores as a value, not as text: an agent's registration)."""
    _check(metadata, None, field, escapes=True)
    return metadata


def dispatch_metadata(metadata: ClientMetadata | None) -> str:
    return metadata.text if metadata is not None else ""


def _check(value: dict[str, Any], size: int | None, field: str, *, escapes: bool) -> None:
    if len(value) > MAX_KEYS:
        raise ValueError(f'"{field}" has {len(value)} keys; at most {MAX_KEYS} are allowed')
    if _depth(value, field) > MAX_DEPTH:
        raise ValueError(f'"{field}" is nested more than {MAX_DEPTH} levels deep')
    if escapes and (where := _lone_surrogate(value, field)) is not None:
        raise ValueError(f'"{field}" must be valid Unicode text (a lone surrogate in {where})')
    if size is None:
        size = len(compact_json(value).encode())
    if size > MAX_BYTES:
        raise ValueError(
            f'"{field}" is {size} bytes as compact JSON; at most {MAX_BYTES} bytes are allowed'
        )


def _depth(value: Any, field: str) -> int:
    """Nesting depth, iteratively so that hostile input cannot exhaust the stack.

    Refuses a number beyond a double's range on the way (`1e400`: valid JSON text, but
    what an agent reads it as, infinity or an error, depends on its parser)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f'"{field}" has a number beyond the range of a double')
        if isinstance(item, dict):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item)
        if deepest > MAX_DEPTH:
            break
    return deepest


def _lone_surrogate(value: Any, field: str) -> str | None:
    """Where the first string (or key) holding half a UTF-16 surrogate pair is, as a path
    (`metadata.a[2]`); None if there is none. JSON's `\\ud800` escape can name one, but no
    UTF-8 text (what LiveKit and the agent read) can hold it. Called on depth-checked
    values only."""
    stack: list[tuple[Any, str]] = [(value, field)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                if _SURROGATE.search(key):
                    return f"a key of {path}"
                stack.append((child, f"{path}.{printable_key(key)}"))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(item))
    return None


def printable_key(key: str) -> str:
    """A key as a message may quote it: at most 64 characters, surrogates escaped."""
    shown = key if len(key) <= 64 else key[:61] + "..."
    return shown.encode("utf-8", "backslashreplace").decode("utf-8")
