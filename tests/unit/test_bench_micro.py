"""bench/micro.py times LKPS's own presence statement, not a copy of it that drifts."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy.dialects.postgresql import asyncpg as postgresql_asyncpg

from lkps.store import registrations

pytestmark = pytest.mark.unit

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def micro(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """bench/micro.py as a module (its sibling modules importable, as when it runs);
    the bench's modules are forgotten again afterwards."""
    before = set(sys.modules)
    monkeypatch.syspath_prepend(str(BENCH))
    yield importlib.import_module("micro")
    for name in set(sys.modules) - before:
        if getattr(sys.modules[name], "__file__", "") and str(BENCH) in str(
            sys.modules[name].__file__
        ):
            del sys.modules[name]


def test_references_time_lkps_presence_statement(micro: ModuleType) -> None:
    statement = micro.present_agent_statement()
    assert statement is registrations.PRESENT_AGENT
    # What the asyncpg reference prepares: the same conditions, worker_connected included.
    compiled = statement.compile(dialect=postgresql_asyncpg.dialect())  # type: ignore[no-untyped-call]
    assert compiled.positiontup == ["agent_id", "now"]
    assert "agent_registrations.worker_connected IS true" in str(compiled)
