"""The Python samples that start a session (the client guide's, lkps-client's README's)
run as written against a real LKPS on a socket. Only what points them at production is
swapped (each replacement must apply): the environment's URL and scope, the
Entra credential, and the agent id."""

from __future__ import annotations

import re
from typing import Any

import pytest

from lkps_client import Session
from tests.client.conftest import FakeCredential
from tests.conftest import AGENT, LIVEKIT_URL, Served
from tests.docs import REPO, sample_containing, substituted

pytestmark = [pytest.mark.api, pytest.mark.backends("sqlite")]

SCOPE = "api://lkps.test/.default"

# page, a text that picks its session-start sample, and the replacements it needs
SAMPLES = {
    "client guide": (
        "docs/client-guide.md",
        "LkpsClient.for_environment",
        {
            'for_environment("np", credential=DefaultAzureCredential())': (
                'for_environment("np", credential=CREDENTIAL, base_url=BASE_URL, scope=SCOPE)'
            ),
        },
    ),
    "lkps-client README": (
        "packages/client/README.md",
        "with LkpsClient.for_environment",
        {
            'AGENT_ID = "00000000-0000-4000-8000-0000000a9e47"': "",
            'for_environment("np", credential=DefaultAzureCredential())': (
                'for_environment("np", credential=CREDENTIAL, base_url=BASE_URL, scope=SCOPE)'
            ),
        },
    ),
}


@pytest.mark.parametrize("name", SAMPLES)
def test_session_start_sample_runs(
    name: str, served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    page, needle, replacements = SAMPLES[name]
    sample = sample_containing(REPO / page, "python", needle)
    credential = FakeCredential([served.user_token()])
    namespace: dict[str, Any] = {
        "AGENT_ID": AGENT,
        "BASE_URL": served.url,
        "SCOPE": SCOPE,
        "CREDENTIAL": credential,
    }
    exec(compile(substituted(sample, replacements), str(sample), "exec"), namespace)  # noqa: S102

    session = namespace["session"]
    assert isinstance(session, Session)
    assert re.fullmatch(rf"alice-{AGENT}-\d+-[0-9a-f]+", session.room_name)
    assert session.livekit_url == LIVEKIT_URL
    assert credential.scopes == [(SCOPE,)]
    printed = capsys.readouterr().out
    if "print(" in sample.code:
        assert session.room_name in printed
