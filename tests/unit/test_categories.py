"""The category guard (tests/categories.py) and pyproject's marker list agree, and the
guard refuses what it should."""

from __future__ import annotations

import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from tests.categories import CATEGORIES, uncategorized

pytestmark = pytest.mark.unit

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _module(name: str, pytestmark: object = None) -> ModuleType:
    module = ModuleType(name)
    if pytestmark is not None:
        module.pytestmark = pytestmark  # type: ignore[attr-defined]
    return module


def test_pyproject_registers_exactly_the_categories_and_describes_each() -> None:
    markers = tomllib.loads(PYPROJECT.read_text())["tool"]["pytest"]["ini_options"]["markers"]
    names = [line.split(":")[0].strip() for line in markers]
    assert sorted(names) == sorted(CATEGORIES)
    assert all(line.split(":", 1)[1].strip() for line in markers)


def test_modules_without_a_category_are_named() -> None:
    modules = [
        _module("tests.a_unmarked"),
        _module("tests.b_only_backends", pytest.mark.backends("sqlite")),
        _module("tests.c_other_marks", [pytest.mark.filterwarnings("ignore")]),
        _module("tests.d_empty_list", []),
        _module("tests.e_unit", pytest.mark.unit),
        _module("tests.f_api_on_sqlite", [pytest.mark.api, pytest.mark.backends("sqlite")]),
        _module("tests.g_e2e_mark", pytest.mark.e2e.mark),
    ]
    assert uncategorized([*modules, modules[0]]) == [
        "tests.a_unmarked",
        "tests.b_only_backends",
        "tests.c_other_marks",
        "tests.d_empty_list",
    ]
