"""The livekit-server `lkps dev` runs: which binary, which ports, which configuration."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest

from lkps.cli.livekit_dev import (
    DEFAULT_UDP_PORT,
    HOW_TO_GET_ONE,
    LiveKitPlan,
    LiveKitUnavailable,
    find_binary,
    port_or_free,
    webhook_url,
)

pytestmark = pytest.mark.unit


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_the_configured_binary_wins_and_must_be_one(tmp_path: Path) -> None:
    configured = executable(tmp_path / "mine" / "livekit-server")
    on_path = executable(tmp_path / "bin" / "livekit-server")
    assert find_binary(configured, cwd=tmp_path, path=str(on_path.parent)) == configured
    with pytest.raises(LiveKitUnavailable, match=r"LKPS_LIVEKIT_SERVER_BIN=.*not an executable"):
        find_binary(tmp_path / "absent", cwd=tmp_path, path=str(on_path.parent))
    not_executable = tmp_path / "plain"
    not_executable.write_text("")
    with pytest.raises(LiveKitUnavailable):
        find_binary(not_executable, cwd=tmp_path, path=None)


def test_path_before_the_built_one_and_the_newest_build(tmp_path: Path) -> None:
    built = tmp_path / ".cache/livekit/bin"
    executable(built / "livekit-server-v1.13.5")
    newest = executable(built / "livekit-server-v1.13.10")
    (built / "livekit-server-v1.99.0").write_text("not executable")
    (built / "build.lock").write_text("")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    assert find_binary(None, cwd=tmp_path, path=str(empty)) == newest
    on_path = executable(tmp_path / "bin" / "livekit-server")
    assert find_binary(None, cwd=tmp_path, path=f"{empty}:{on_path.parent}") == on_path


def test_without_any_binary_it_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(LiveKitUnavailable) as raised:
        find_binary(None, cwd=tmp_path, path=str(tmp_path))
    assert str(raised.value) == HOW_TO_GET_ONE
    assert "\n" not in HOW_TO_GET_ONE
    assert "scripts/livekit-server" in HOW_TO_GET_ONE and "--no-livekit" in HOW_TO_GET_ONE


@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM])
def test_a_taken_port_is_replaced_by_a_free_one(kind: socket.SocketKind) -> None:
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            holder.listen()
        taken = holder.getsockname()[1]
        chosen = port_or_free(taken, kind)
        assert chosen not in (taken, 0)
    # Free again: then it is the one chosen.
    assert port_or_free(taken, kind) == taken
    assert port_or_free(0, kind) != 0


def test_port_zero_means_free_ports_for_signalling_and_ice() -> None:
    plan = LiveKitPlan.choose(Path("/bin/true"), 0)
    assert plan.http_port != 0 and plan.udp_port not in (0, DEFAULT_UDP_PORT)
    assert plan.url == f"ws://127.0.0.1:{plan.http_port}"


def test_the_config_shares_the_key_pair_points_webhooks_at_lkps_and_stays_on_loopback() -> None:
    plan = LiveKitPlan(Path("/bin/true"), http_port=40001, udp_port=40002)
    config = plan.config(
        api_key="devkey", api_secret="secret", webhook_url=webhook_url("127.0.0.1", 8181)
    )
    assert config["keys"] == {"devkey": "secret"}
    assert config["webhook"] == {
        "api_key": "devkey",
        "urls": ["http://127.0.0.1:8181/api/livekit/webhook"],
    }
    assert config["port"] == 40001
    assert config["bind_addresses"] == ["127.0.0.1"]
    rtc = config["rtc"]
    assert isinstance(rtc, dict)
    assert rtc["udp_port"] == 40002
    assert rtc["tcp_port"] == 0  # livekit-server binds ICE TCP on every interface
    assert rtc["node_ip"] == "127.0.0.1" and rtc["use_external_ip"] is False
    assert rtc["interfaces"] == {"includes": ["lo"]}


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "http://127.0.0.1:9000/api/livekit/webhook"),
        ("0.0.0.0", "http://127.0.0.1:9000/api/livekit/webhook"),  # noqa: S104
        ("::1", "http://[::1]:9000/api/livekit/webhook"),
    ],
)
def test_the_webhook_url_is_one_the_server_on_this_machine_reaches(
    host: str, expected: str
) -> None:
    assert webhook_url(host, 9000) == expected


def test_a_livekit_of_ones_own_means_none_is_started(capsys: pytest.CaptureFixture[str]) -> None:
    from lkps.cli.dev import _livekit_plan
    from lkps.config import Settings

    own = Settings(livekit_url="ws://127.0.0.1:7999", livekit_server_bin=Path("/bin/true"))
    assert _livekit_plan(own, 0) is None
    assert "LKPS_LIVEKIT_URL=ws://127.0.0.1:7999; not starting one" in capsys.readouterr().out


def test_a_configured_binary_that_is_not_one_is_said_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lkps.cli.dev import _livekit_plan
    from lkps.config import Settings

    assert _livekit_plan(Settings(livekit_server_bin=tmp_path / "absent"), 0) is None
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "is not an executable file" in said
