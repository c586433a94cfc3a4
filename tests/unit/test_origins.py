"""`LKPS_CORS_ALLOW_ORIGINS`: which entries are origins, what each allows, and what only
a dev instance accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from lkps.cli.dev import dev_settings
from lkps.config import ConfigurationError, Settings
from lkps.origins import parse_origins

pytestmark = pytest.mark.unit


def test_exact_origins_allow_exactly_themselves() -> None:
    allowed, problems = parse_origins(
        ["https://app.example.com", "http://127.0.0.1:5173", "http://[::1]:8080"], dev=False
    )
    assert problems == []
    for origin in (b"https://app.example.com", b"http://127.0.0.1:5173", b"http://[::1]:8080"):
        assert allowed.allows(origin)
    for origin in (
        b"https://app.example.com:443",
        b"https://app.example.com/",
        b"https://app.example.com.evil.example",
        b"http://app.example.com",
        b"https://APP.example.com",
        b"http://127.0.0.1:5174",
        b"http://127.0.0.1",
        b"null",
        b"",
        b"*",
    ):
        assert not allowed.allows(origin), origin


def test_none_configured_is_empty() -> None:
    allowed, problems = parse_origins([], dev=False)
    assert (bool(allowed), problems) == (False, [])
    assert not Settings(env="prod").cors_origins()


@pytest.mark.parametrize(
    ("entry", "hint"),
    [
        ("https://app.example.com/", "write it as https://app.example.com"),
        ("https://app.example.com:443", "write it as https://app.example.com"),
        ("HTTPS://App.Example.com", "write it as https://app.example.com"),
        ("https://app.example.com/path?q=1", "write it as https://app.example.com"),
        ("app.example.com", "not an origin"),
        ("ftp://app.example.com", "not an origin"),
        ("https://user@app.example.com", "not an origin"),
        ("https://app.example.com:99999", "not an origin"),
        ("https://app.example.com:x", "not an origin"),
        ("https://", "not an origin"),
        ("https://bücher.example", "not an origin"),
        ("http://localhost:8080:*", "write it as http://localhost:*"),
    ],
)
def test_entries_that_are_not_origins_are_refused_with_the_fix(entry: str, hint: str) -> None:
    for dev in (False, True):
        _, problems = parse_origins([entry], dev=dev)
        assert len(problems) == 1
        assert "LKPS_CORS_ALLOW_ORIGINS" in problems[0] and hint in problems[0]


@pytest.mark.parametrize("entry", ["*", "http://localhost:*"])
def test_wildcards_are_refused_outside_dev(entry: str) -> None:
    _, problems = parse_origins([entry], dev=False)
    assert len(problems) == 1 and "LKPS_ENV=dev" in problems[0]
    with pytest.raises(ConfigurationError, match="LKPS_CORS_ALLOW_ORIGINS"):
        Settings(env="np", cors_allow_origins=[entry]).cors_origins()


def test_any_port_allows_that_host_on_any_port_only() -> None:
    allowed, problems = parse_origins(["http://localhost:*"], dev=True)
    assert problems == []
    for origin in (b"http://localhost", b"http://localhost:1", b"http://localhost:65535"):
        assert allowed.allows(origin), origin
    for origin in (
        b"http://localhost:",
        b"http://localhost:80x",
        b"http://localhost:123456",
        b"http://localhost.evil.example",
        b"http://localhost:8080.evil.example",
        b"https://localhost:8080",
        b"http://127.0.0.1:8080",
    ):
        assert not allowed.allows(origin), origin


def test_star_allows_any_origin_in_dev() -> None:
    allowed, problems = parse_origins(["*"], dev=True)
    assert problems == [] and allowed.allows(b"https://anything.example")


def test_comma_separated_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LKPS_CORS_ALLOW_ORIGINS", " https://a.example , https://b.example:8443,")
    assert Settings().cors_allow_origins == ["https://a.example", "https://b.example:8443"]


def test_dev_allows_its_own_origin_and_local_pages_unless_told_otherwise(tmp_path: Path) -> None:
    settings = dev_settings(Settings(env="dev"), host="127.0.0.1", port=8123, state_dir=tmp_path)
    allowed = settings.cors_origins()
    for origin in (b"http://127.0.0.1:8123", b"http://localhost:5173", b"http://[::1]:3000"):
        assert allowed.allows(origin), origin
    assert not allowed.allows(b"https://app.example.com")
    assert not allowed.allows(b"http://192.168.1.2:8123")

    chosen = Settings(env="dev", cors_allow_origins=["https://app.example.com"])
    settings = dev_settings(chosen, host="127.0.0.1", port=8123, state_dir=tmp_path)
    assert settings.cors_allow_origins == ["https://app.example.com"]
