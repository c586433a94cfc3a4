from __future__ import annotations

import json

import pytest

from lkps.sessions.metadata import MAX_BYTES, MAX_DEPTH, check_metadata, dispatch_metadata
from lkps.sessions.room_names import new_room_name

pytestmark = pytest.mark.unit


def test_dispatch_metadata_is_compact_utf8_json_in_the_clients_order() -> None:
    metadata = {"z": 1, "a": {"ü": "ß"}, "m": [1.5, None, True]}
    assert dispatch_metadata(metadata) == '{"z":1,"a":{"ü":"ß"},"m":[1.5,null,true]}'
    assert dispatch_metadata(None) == ""


@pytest.mark.parametrize("keys", [0, 1, 50])
def test_up_to_fifty_keys_pass(keys: int) -> None:
    check_metadata({f"k{i}": i for i in range(keys)})


def test_fifty_one_keys_fail() -> None:
    with pytest.raises(ValueError, match="51 keys"):
        check_metadata({f"k{i}": i for i in range(51)})


def test_size_limit_is_exact() -> None:
    def sized(size: int) -> dict[str, str]:
        return {"k": "x" * (size - len('{"k":""}'))}

    assert len(json.dumps(sized(MAX_BYTES), separators=(",", ":"))) == MAX_BYTES
    check_metadata(sized(MAX_BYTES))
    with pytest.raises(ValueError, match="10241 bytes"):
        check_metadata(sized(MAX_BYTES + 1))


def test_depth_limit() -> None:
    value: object = 1
    for _ in range(MAX_DEPTH - 1):
        value = {"n": value}
    check_metadata({"n": value})  # MAX_DEPTH levels of objects
    with pytest.raises(ValueError, match="nested"):
        check_metadata({"n": [value]})


def test_depth_check_survives_hostile_nesting() -> None:
    value: object = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(ValueError, match="nested"):
        check_metadata({"n": value})


def test_room_names_are_unique_and_well_formed() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    names = {
        new_room_name("alice", "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", now) for _ in range(10_000)
    }
    assert len(names) == 10_000
    name = names.pop()
    assert name.startswith(f"alice-aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa-{int(now.timestamp())}-")
    assert len(name.rsplit("-", 1)[1]) == 16
