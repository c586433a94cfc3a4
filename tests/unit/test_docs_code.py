"""The documentation's Python samples compile, and the site's build hooks do what
mkdocs.yml relies on: the API reference covers every operation of the served OpenAPI
document, and links to repository files land on the pages made of them."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from lkps.app import create_app
from lkps.config import Settings
from tests.docs import PAGES, REPO, Sample, samples

pytestmark = pytest.mark.unit

TOP_LEVEL_AWAIT = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
PYTHON_SAMPLES = [sample for page in PAGES for sample in samples(page, "python")]


def load_hooks() -> ModuleType:
    """scripts/mkdocs_hooks.py, which mkdocs loads by path (it is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "mkdocs_hooks", REPO / "scripts" / "mkdocs_hooks.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_pages_have_python_samples() -> None:
    """Guards the extraction itself: a fence pattern that matched nothing would pass."""
    pages = {sample.page.relative_to(REPO).as_posix() for sample in PYTHON_SAMPLES}
    assert {"docs/client-guide.md", "docs/agent-guide.md", "docs/sdk/index.md"} <= pages


@pytest.mark.parametrize("sample", PYTHON_SAMPLES, ids=str)
def test_python_sample_compiles(sample: Sample) -> None:
    """Top-level `await` is allowed: an async sample shows the body of a coroutine."""
    compile(sample.code, str(sample), "exec", flags=TOP_LEVEL_AWAIT, dont_inherit=True)


def test_a_syntax_error_in_a_sample_is_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("Text.\n\n- item:\n\n    ```python\n    print(1\n    ```\n")
    [sample] = samples(page, "python")
    assert sample.line == 6
    with pytest.raises(SyntaxError):
        compile(sample.code, str(sample.page), "exec", flags=TOP_LEVEL_AWAIT, dont_inherit=True)


def test_api_reference_covers_every_served_operation() -> None:
    hooks = load_hooks()
    document: dict[str, Any] = create_app(Settings()).openapi()
    page: str = hooks.render_openapi(document)
    for path, item in document["paths"].items():
        for method in item:
            if method in hooks.METHODS:
                assert f"### `{method.upper()} {path}`" in page
    for name in document["components"]["schemas"]:
        assert f"### {name} {{#schema-{name.lower()}}}" in page
    # Every schema a table links to has its anchor on the page.
    for anchor in {part.split(")")[0] for part in page.split("](#schema-")[1:]}:
        assert f"{{#schema-{anchor}}}" in page


@pytest.mark.parametrize(
    ("markdown", "page", "expected"),
    [
        # From a docs page to a package README, and to the example agent's code.
        ("[c](../packages/client/README.md)", "client-guide.md", "[c](sdk/python-client.md)"),
        ("[a](../examples/agent/agent.py)", "agent-guide.md", "[a](sdk/example-agent.md#agentpy)"),
        # From a mirrored README back into docs/, and to a package directory.
        (
            "[g](../../docs/agent-guide.md#install)",
            "sdk/example-agent.md",
            "[g](../agent-guide.md#install)",
        ),
        ("[p](../../packages/agent)", "sdk/example-agent.md", "[p](agent-sdk.md)"),
        # Links within docs/, external ones and anchors are left as they are.
        ("[x](client-guide.md#metadata)", "agent-guide.md", "[x](client-guide.md#metadata)"),
        ("[l](https://livekit.io)", "index.md", "[l](https://livekit.io)"),
        ("[t](#top)", "index.md", "[t](#top)"),
        # A repository file that is not on the site stays broken, for --strict to report.
        ("[b](../bench/RESULTS.md)", "deployment.md", "[b](../bench/RESULTS.md)"),
    ],
)
def test_links_to_repository_files(markdown: str, page: str, expected: str) -> None:
    assert load_hooks().rewrite_links(markdown, page) == expected
