"""Every test module declares its category (`pytestmark = pytest.mark.<category>`): the
suite refuses to collect one that does not (tests/conftest.py), so `pytest -m unit` and
friends select every test there is, not every test someone remembered to mark."""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType

import pytest

# pyproject.toml's `markers` name these and only these (tests/unit/test_categories.py).
CATEGORIES = frozenset({"unit", "api", "cli", "e2e", "deploy"})


def categories_of(module: ModuleType) -> set[str]:
    """The categories a module's own `pytestmark` (one mark or a list) declares."""
    declared = getattr(module, "pytestmark", [])
    marks = declared if isinstance(declared, list) else [declared]
    names = {mark.name for mark in marks if isinstance(mark, pytest.Mark | pytest.MarkDecorator)}
    return names & CATEGORIES


def uncategorized(modules: Iterable[ModuleType]) -> list[str]:
    """The names of the modules that declare no category, sorted, each once."""
    return sorted({module.__name__ for module in modules if not categories_of(module)})
