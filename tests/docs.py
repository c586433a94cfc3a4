"""The code samples of the documentation, as the tests run them: fenced blocks read out
of the Markdown pages the site is built from (docs/, the READMEs it publishes)."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Every Markdown file the site shows, and the README the first commands are in.
PAGES = sorted(
    [
        *REPO.glob("docs/**/*.md"),
        REPO / "README.md",
        *REPO.glob("packages/*/README.md"),
        REPO / "examples/agent/README.md",
    ]
)

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<language>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True)
class Sample:
    page: Path
    line: int
    language: str
    code: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def samples(page: Path, language: str | None = None) -> list[Sample]:
    """The fenced blocks of `page` (of one `language`, if given), dedented as written in
    a list item."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        if language is not None and match["language"] != language:
            continue
        line = text.count("\n", 0, match.start()) + 2  # the block's first line of code
        found.append(Sample(page, line, match["language"], textwrap.dedent(match["body"])))
    return found


def sample_containing(page: Path, language: str, needle: str) -> Sample:
    """The one block of `page` in `language` that contains `needle`."""
    matching = [s for s in samples(page, language) if needle in s.code]
    assert len(matching) == 1, f"{page}: {len(matching)} {language} blocks contain {needle!r}"
    return matching[0]


def substituted(sample: Sample, replacements: dict[str, str]) -> str:
    """The sample with every `old` replaced by `new`. Each `old` must occur: a sample
    edited so that a replacement no longer applies fails loudly, not silently."""
    code = sample.code
    for old, new in replacements.items():
        assert old in code, f"{sample}: expected {old!r} in\n{code}"
        code = code.replace(old, new)
    return code
