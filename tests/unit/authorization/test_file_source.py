from __future__ import annotations

import os
from pathlib import Path

import pytest

from lkps.authorization import AuthorizationUnavailable, ClientAuthorizer, FileAuthorizationSource
from lkps.errors import Forbidden

pytestmark = pytest.mark.unit

AGENT = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
CLIENT = "11111111-1111-4111-8111-111111111111"


def write(path: Path, text: str) -> None:
    path.write_text(text)
    stat = path.stat()  # make sure the change is visible even within one mtime tick
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


async def test_yaml_file_with_upper_case_ids(tmp_path: Path) -> None:
    path = tmp_path / "authz.yaml"
    write(
        path,
        f"agents:\n  {AGENT.upper()}:\n    pre_authorized_clients:\n      - {CLIENT.upper()}\n",
    )
    source = FileAuthorizationSource(path)
    assert await source.pre_authorized_clients(AGENT) == frozenset({CLIENT})
    assert await source.pre_authorized_clients("cccccccc-cccc-4ccc-8ccc-cccccccccccc") is None
    assert source.ready()


async def test_json_file_and_reload_on_change(tmp_path: Path) -> None:
    path = tmp_path / "authz.json"
    write(path, '{"agents": {"%s": {"pre_authorized_clients": []}}}' % AGENT)
    source = FileAuthorizationSource(path)
    assert await source.pre_authorized_clients(AGENT) == frozenset()
    write(path, '{"agents": {"%s": {"pre_authorized_clients": ["%s"]}}}' % (AGENT, CLIENT))
    assert await source.pre_authorized_clients(AGENT) == frozenset({CLIENT})


@pytest.mark.parametrize(
    "text",
    [
        "agents: [1, 2]",
        '{"agents": {"not-a-uuid": {"pre_authorized_clients": []}}}',
        '{"agents": {"%s": {"pre_authorized_clients": "one"}}}' % AGENT,
        "{ broken",
        "- just a list",
    ],
)
async def test_invalid_file_fails_closed(tmp_path: Path, text: str) -> None:
    path = tmp_path / "authz.yaml"
    write(path, text)
    source = FileAuthorizationSource(path)
    with pytest.raises(AuthorizationUnavailable):
        await source.pre_authorized_clients(AGENT)
    assert not source.ready()


async def test_missing_file_fails_closed(tmp_path: Path) -> None:
    source = FileAuthorizationSource(tmp_path / "absent.json")
    with pytest.raises(AuthorizationUnavailable):
        await source.pre_authorized_clients(AGENT)


async def test_authorizer_messages(tmp_path: Path) -> None:
    path = tmp_path / "authz.json"
    write(path, '{"agents": {"%s": {"pre_authorized_clients": ["%s"]}}}' % (AGENT, CLIENT))
    authorizer = ClientAuthorizer(FileAuthorizationSource(path))
    allowed = await authorizer.check(agent_id=AGENT, client_app_id=CLIENT.upper(), enforce=True)
    assert "pre-authorized" in allowed.reason
    off = await authorizer.check(agent_id=AGENT, client_app_id="x", enforce=False)
    assert "does not enforce" in off.reason
    with pytest.raises(Forbidden) as denied:
        await authorizer.check(agent_id=AGENT, client_app_id="someone-else", enforce=True)
    assert denied.value.message == "You are not authorized to access this agent"
    assert "someone-else" in denied.value.reason
