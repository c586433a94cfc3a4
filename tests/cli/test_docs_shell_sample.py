"""The getting-started page's shell walk-through (register the example agent, start a
session, verify the audit trail) runs as written against a `lkps dev` process; only the
port and how `lkps` is invoked differ (a free port; this interpreter's `-m lkps`, since
`uv run` would look for the project in the test's working directory)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs import REPO, sample_containing, substituted
from tests.processes import clean_environment, free_port, lkps_process

pytestmark = pytest.mark.cli


def test_getting_started_walkthrough(tmp_path: Path) -> None:
    sample = sample_containing(REPO / "docs/index.md", "sh", "lkps dev token --agent")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    script = substituted(
        sample,
        {
            "http://127.0.0.1:8080": base,
            "python3 -m uv run lkps": f"{shlex.quote(sys.executable)} -m lkps",
        },
    )
    env = clean_environment()
    with lkps_process(
        "dev", "--port", str(port), env=env, cwd=tmp_path, health_url=f"{base}/api/health"
    ):
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    assert '"registration_id"' in result.stdout
    assert '"participant_token"' in result.stdout
    assert "intact" in result.stdout
