"""Every Mermaid diagram of the documentation parses with the mermaid.js the site ships
(docs/assets/vendor/mermaid): a diagram that does not parse shows on the site as a red
"Syntax error" box, which `mkdocs build --strict` cannot see."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.browser import Browser
from tests.docs import PAGES, REPO, samples

pytestmark = pytest.mark.e2e

MERMAID_JS = REPO / "docs/assets/vendor/mermaid/mermaid.min.js"

# Parses each diagram in turn; resolves to "<where>: <error>" for each that fails.
PARSE_ALL = """
(async (diagrams) => {
  if (typeof mermaid === "undefined") return ["mermaid.js did not load"];
  const failures = [];
  for (const [where, text] of diagrams) {
    try { await mermaid.parse(text); } catch (error) { failures.push(`${where}: ${error.message || error}`); }
  }
  return failures;
})(%s)
"""


def diagrams() -> list[tuple[str, str]]:
    return [(str(s), s.code) for page in PAGES for s in samples(page, "mermaid")]


def test_the_pages_have_diagrams() -> None:
    where = {location.split(":")[0] for location, _ in diagrams()}
    assert {"docs/system.md", "docs/sdk/architecture.md", "docs/agent-guide.md"} <= where


async def test_every_diagram_parses(browser: Browser, tmp_path: Path) -> None:
    page = tmp_path / "mermaid.html"
    page.write_text(f'<!doctype html><script src="{MERMAID_JS.as_uri()}"></script>')
    failures = await browser.evaluate_in(page.as_uri(), PARSE_ALL % json.dumps(diagrams()))
    assert failures == []


async def test_a_broken_diagram_is_reported(browser: Browser, tmp_path: Path) -> None:
    """The check itself: a statement split by `;` (the mistake it caught) fails."""
    page = tmp_path / "mermaid.html"
    page.write_text(f'<!doctype html><script src="{MERMAID_JS.as_uri()}"></script>')
    broken = [("broken", "sequenceDiagram\n    A->>B: one; two\n")]
    failures = await browser.evaluate_in(page.as_uri(), PARSE_ALL % json.dumps(broken))
    assert len(failures) == 1 and failures[0].startswith("broken: "), failures
