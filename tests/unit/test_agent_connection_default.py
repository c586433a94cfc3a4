"""LKPS_AGENT_CONNECTION: `gateway` unless told otherwise, except under `lkps dev`, whose
tour keeps an agent present by heartbeats alone (no LiveKit needed) and so stays `direct`
unless the variable says otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from lkps.cli.dev import dev_settings
from lkps.config import Settings

pytestmark = pytest.mark.unit


def test_the_default_is_the_gateway() -> None:
    assert Settings(env="np").agent_connection == "gateway"
    assert Settings(env="np").livekit_agent_target_load == 0.7


@pytest.mark.parametrize(
    ("given", "expected"), [({}, "direct"), ({"agent_connection": "gateway"}, "gateway")]
)
def test_lkps_dev_is_direct_unless_asked(
    tmp_path: Path, given: dict[str, str], expected: str
) -> None:
    base = Settings(env="dev", **given)  # type: ignore[arg-type]
    settings = dev_settings(base, host="127.0.0.1", port=8080, state_dir=tmp_path)
    assert settings.agent_connection == expected
