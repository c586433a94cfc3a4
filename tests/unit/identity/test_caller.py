from __future__ import annotations

import pytest

from lkps.config import DEFAULT_CWID_CLAIMS
from lkps.identity.caller import client_app_id, extract_cwid, is_app_only, sanitise_cwid

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"cwid": "ABCDE", "preferred_username": "x@y", "oid": "o"}, "ABCDE"),
        ({"onprem_sam_account_name": "GXYZQ", "upn": "someone@bayer.example"}, "GXYZQ"),
        ({"preferred_username": "jane.doe@contoso.example", "upn": "other@x"}, "jane.doe"),
        ({"upn": "john+test@contoso.example", "oid": "o"}, "john_test"),
        ({"oid": "6f1c2f0e-8f5e-4b8e-9a43-3c1b8f0b7a11"}, "6f1c2f0e_8f5e_4b8e_9a43_3c1b8f0b7a11"),
        ({"cwid": "  ", "preferred_username": "@nobody", "oid": "o1"}, "o1"),
        ({"cwid": "Ünïcödé name"}, "_n_c_d__name"),
        ({}, None),
    ],
)
def test_cwid_is_the_first_present_claim_sanitised(
    claims: dict[str, str], expected: str | None
) -> None:
    assert extract_cwid(claims, DEFAULT_CWID_CLAIMS) == expected


def test_cwid_claim_order_is_configurable() -> None:
    claims = {"cwid": "FIRST", "upn": "second@x"}
    assert extract_cwid(claims, ["upn", "cwid"]) == "second"


def test_sanitised_cwid_only_uses_the_room_name_alphabet() -> None:
    assert sanitise_cwid("a-b c/d\\e;f'g\"h<i>j.k_l9") == "a_b_c_d_e_f_g_h_i_j.k_l9"


@pytest.mark.parametrize(
    ("claims", "app_only"),
    [
        ({"idtyp": "app", "oid": "a", "sub": "b", "scp": "x"}, True),
        ({"oid": "same", "sub": "same"}, True),
        ({"oid": "same", "sub": "same", "scp": "access_as_user"}, False),
        ({"oid": "user", "sub": "pairwise", "scp": "access_as_user"}, False),
        ({"oid": "user", "sub": "pairwise"}, False),
        ({"idtyp": "user", "oid": "u", "sub": "s", "scp": "x"}, False),
    ],
)
def test_app_only_detection(claims: dict[str, str], app_only: bool) -> None:
    assert is_app_only(claims) is app_only


def test_client_app_id_is_azp_in_v2_and_appid_in_v1() -> None:
    assert client_app_id({"ver": "2.0", "azp": "AAA", "appid": "bbb"}) == "aaa"
    assert client_app_id({"ver": "1.0", "azp": "aaa", "appid": "BBB"}) == "bbb"
    assert client_app_id({"appid": "ccc"}) == "ccc"
    assert client_app_id({"ver": "2.0"}) is None
