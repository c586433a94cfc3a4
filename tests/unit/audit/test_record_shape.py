"""One definition of an audit record: the dataclasses in `lkps.audit.records`.

Everything else that lists a record's fields is derived from them or pinned to them
here, so a field added in one place and forgotten in another fails the suite instead of
being stored unhashed, served undocumented or dropped by the client.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from lkps.api.schemas import AuditRecordModel
from lkps.audit.chain import GENESIS_HASH, HASHED_FIELDS, ChainKey, record_hash
from lkps.audit.records import ENTRY_FIELDS, RECORD_FIELDS, AuditFilter
from lkps.store.models import AuditRecordRow
from lkps_client._models import AuditRecord as ClientAuditRecord

pytestmark = pytest.mark.unit

LINKS = ("seq", "prev_hash", "hash", "key_id")


def test_a_stored_record_is_an_entry_and_its_links() -> None:
    assert set(RECORD_FIELDS) == {*ENTRY_FIELDS, *LINKS}
    assert len(RECORD_FIELDS) == len(ENTRY_FIELDS) + len(LINKS)


def test_every_field_but_the_hash_itself_is_hashed() -> None:
    assert tuple(name for name in RECORD_FIELDS if name != "hash") == HASHED_FIELDS


def test_the_table_has_exactly_the_record_fields() -> None:
    assert {column.key for column in AuditRecordRow.__table__.columns} == set(RECORD_FIELDS)


def test_the_api_model_lists_the_record_fields_in_order() -> None:
    assert tuple(AuditRecordModel.model_fields) == RECORD_FIELDS


def test_the_client_model_lists_the_record_fields_in_order() -> None:
    fields = tuple(field.name for field in dataclasses.fields(ClientAuditRecord))
    assert fields == RECORD_FIELDS


def test_filters_name_record_fields() -> None:
    names = {field.name for field in dataclasses.fields(AuditFilter)}
    assert names - {"since", "until"} <= set(RECORD_FIELDS)


def _fields() -> dict[str, Any]:
    values: dict[str, Any] = dict.fromkeys(HASHED_FIELDS, "x")
    values.update(seq=7, status=200, prev_hash=GENESIS_HASH, details='{"a":1}', key_id=None)
    values["occurred_at"] = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    return values


@pytest.mark.parametrize("name", HASHED_FIELDS)
def test_each_hashed_field_changes_the_hash(name: str) -> None:
    original = _fields()
    changed = dict(original)
    if name == "occurred_at":
        changed[name] = datetime(2026, 12, 6, 12, 0, 1, tzinfo=UTC)
    elif name in {"seq", "status"}:
        changed[name] = original[name] + 1
    elif name == "prev_hash":
        changed[name] = "1" * 64
    elif name == "key_id":
        # The key id is hashed too: a record cannot be moved under another key's name.
        key = ChainKey("x", b"k" * 32)
        renamed = ChainKey("y", key.secret)
        original["key_id"], changed["key_id"] = "x", "y"
        assert record_hash(changed, renamed) != record_hash(original, key)
        return
    else:
        changed[name] = "y"
    assert record_hash(changed) != record_hash(original)
