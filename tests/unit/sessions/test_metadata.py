from __future__ import annotations

import json
import re

import pytest

from lkps.sessions.metadata import (
    MAX_BYTES,
    MAX_DEPTH,
    check_metadata,
    compact_json_text,
    dispatch_metadata,
    parse_client_metadata,
)
from lkps.sessions.room_names import new_room_name

pytestmark = pytest.mark.unit


def test_dispatch_metadata_is_the_clients_text_compacted() -> None:
    text = '{ "z" : 1.0 ,\n\t"a": {"ü": "ß  \\" x"},\r\n "m": [1e2, null, true, "\\u00e9"] }'
    metadata = parse_client_metadata(text, field="metadata")
    assert (
        dispatch_metadata(metadata)
        == '{"z":1.0,"a":{"ü":"ß  \\" x"},"m":[1e2,null,true,"\\u00e9"]}'
    )
    assert dispatch_metadata(None) == ""


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1}',
        '{"a":"  spaced \\"  \\\\"}',
        '{"a":"\\\\", "b" : [ ] , "c":{ }}',
        '{"k": "\\" \\\\ \\n "}',
        ' {"a": [1, 2 , {"b": "c d"}]} ',
    ],
)
def test_compaction_equals_reencoding_where_no_escape_was_chosen(text: str) -> None:
    # Where the client's text has no escapes to keep, compaction and re-encoding agree.
    value = json.loads(text)
    assert compact_json_text(text) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize(
    "text",
    ['{"a": 1, "a": 2}', '{"x": {"b": 1, "b": 1}}', '{"x": [{"c": 1}, {"c": 1, "c": 1}]}'],
)
def test_a_key_twice_in_one_object_is_refused_at_any_depth(text: str) -> None:
    with pytest.raises(ValueError, match="more than once"):
        parse_client_metadata(text, field="metadata")


def test_a_lone_surrogate_is_refused_in_the_apis_words() -> None:
    expected = '"metadata" must be valid Unicode text (a lone surrogate in metadata.a[1])'
    with pytest.raises(ValueError, match=re.escape(expected) + "$"):
        parse_client_metadata('{"a": ["ok", "\\ud800"]}', field="metadata")
    # A pair is one character, not a lone half.
    assert (
        parse_client_metadata('{"a": "\\ud83d\\ude00"}', field="m").text == '{"a":"\\ud83d\\ude00"}'
    )


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
