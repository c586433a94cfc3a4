"""What the audit's `client_ip` records of a client address (issue 13)."""

from __future__ import annotations

import pytest

from lkps.api.client_address import MAX_LENGTH, recorded_client_ip

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("host", "recorded"),
    [
        ("198.51.100.23", "198.51.100.23"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("not-an-ip", "invalid:not-an-ip"),
        ('x"}{', "invalid:x___"),
        ("a, b", "invalid:a__b"),
        ("", "invalid:"),
        ("192.0.2.1 ", "invalid:192.0.2.1_"),
        ("010.0.0.1", "invalid:010.0.0.1"),
        ("fe80::1%" + "z" * 60, "invalid:fe80::1_" + "z" * 48),
        ("é\x00\n", "invalid:___"),
    ],
)
def test_an_ip_is_normalized_and_anything_else_marked(host: str, recorded: str) -> None:
    assert recorded_client_ip(host) == recorded


def test_nothing_longer_than_the_column_is_recorded() -> None:
    recorded = recorded_client_ip("a" * 3000)
    assert recorded == "invalid:" + "a" * (MAX_LENGTH - len("invalid:"))
    assert len(recorded) == MAX_LENGTH == 64


def test_no_address_is_none() -> None:
    assert recorded_client_ip(None) is None
