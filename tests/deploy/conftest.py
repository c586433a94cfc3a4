"""The deploy tier: the Helm chart, the Grafana dashboard and the Prometheus alert rules
under deploy/, checked with the tools operators use on them.

helm and promtool are `LKPS_HELM_BIN` / `LKPS_PROMTOOL_BIN`, or the releases
`scripts/go-tool` builds into `.cache/go-tools/bin/<tool>-<version>` (the versions pinned in
that script). Without one, the tests that need it are skipped, saying how to get it; with
`LKPS_TEST_REQUIRE_DEPLOY_TOOLS=1` (as in CI) they fail instead.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BUILD_SCRIPT = ROOT / "scripts" / "go-tool"
REQUIRE_VARIABLE = "LKPS_TEST_REQUIRE_DEPLOY_TOOLS"


def pinned_version(tool: str) -> str:
    """The release `scripts/go-tool <tool>` builds (its `VERSION=` default), or the one
    its version variable asks for."""
    variable = f"LKPS_{tool.upper()}_VERSION"
    if version := os.environ.get(variable):
        return version
    pattern = rf"^\s*VERSION=\$\{{{variable}:-([^}}]+)\}}"
    match = re.search(pattern, BUILD_SCRIPT.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no pinned VERSION=${{{variable}:-...}} line in {BUILD_SCRIPT}")
    return match.group(1)


def find_tool(tool: str) -> Path:
    """The tool's binary, or a skip (a failure when the tools are required)."""
    variable = f"LKPS_{tool.upper()}_BIN"
    if configured := os.environ.get(variable):
        path = Path(configured)
        where = f"{variable}={configured}"
    else:
        path = ROOT / ".cache" / "go-tools" / "bin" / f"{tool}-{pinned_version(tool)}"
        where = str(path.relative_to(ROOT))
    if path.is_file() and os.access(path, os.X_OK):
        return path
    message = f"no {tool} binary at {where}; build it with scripts/go-tool {tool} (or point {variable} at one)"
    if os.environ.get(REQUIRE_VARIABLE, "") not in ("", "0"):
        pytest.fail(f"{message} [{REQUIRE_VARIABLE}=1]", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def helm() -> Path:
    return find_tool("helm")


@pytest.fixture(scope="session")
def promtool() -> Path:
    return find_tool("promtool")


def run_tool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run helm or promtool; the caller checks the status (and shows the output)."""
    return subprocess.run(
        [str(arg) for arg in args], cwd=cwd, capture_output=True, text=True, timeout=120
    )
