"""Request metadata: the limits a client must respect, and the exact form the agent gets.

The agent receives the metadata as LiveKit dispatch metadata, a string: the compact
UTF-8 JSON of what the client sent, keys in the client's order.
"""

from __future__ import annotations

import json
from typing import Any

MAX_KEYS = 50
MAX_BYTES = 10_240
MAX_DEPTH = 32


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def check_metadata(metadata: dict[str, Any], *, field: str = "metadata") -> dict[str, Any]:
    """Raise `ValueError` with a caller-facing message when a limit is broken."""
    if len(metadata) > MAX_KEYS:
        raise ValueError(f'"{field}" has {len(metadata)} keys; at most {MAX_KEYS} are allowed')
    if _depth(metadata) > MAX_DEPTH:
        raise ValueError(f'"{field}" is nested more than {MAX_DEPTH} levels deep')
    size = len(compact_json(metadata).encode())
    if size > MAX_BYTES:
        raise ValueError(
            f'"{field}" is {size} bytes as compact JSON; at most {MAX_BYTES} bytes are allowed'
        )
    return metadata


def dispatch_metadata(metadata: dict[str, Any] | None) -> str:
    return compact_json(metadata) if metadata is not None else ""


def _depth(value: Any) -> int:
    """Nesting depth, iteratively so that hostile input cannot exhaust the stack."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item)
        if deepest > MAX_DEPTH:
            break
    return deepest
