"""Token validation beyond the hostile cases: what a valid token yields, and the cache."""

from __future__ import annotations

import httpx
import pytest

from lkps.errors import Unauthenticated
from lkps.identity import JwksCache, TokenValidator
from lkps.identity.validator import VerifiedTokenCache
from lkps_testkit import EntraDouble
from tests.conftest import API_AUDIENCE, CLIENT_A, FakeClock

pytestmark = pytest.mark.unit


@pytest.fixture
async def validator(entra: EntraDouble, clock: FakeClock) -> TokenValidator:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=entra.asgi_app()))
    keys = JwksCache(f"http://entra.test/{entra.tenant_id}/discovery/v2.0/keys", http, clock)
    issuers = frozenset(
        {
            f"https://login.microsoftonline.com/{entra.tenant_id}/v2.0",
            f"https://sts.windows.net/{entra.tenant_id}/",
        }
    )
    return TokenValidator(
        keys,
        clock,
        tenant_id=entra.tenant_id,
        audiences=[API_AUDIENCE],
        issuers=issuers,
        cwid_claims=["cwid", "preferred_username", "upn", "oid"],
    )


@pytest.mark.parametrize("version", ["1.0", "2.0"])
async def test_delegated_token_yields_the_user(
    validator: TokenValidator, entra: EntraDouble, version: str
) -> None:
    token = entra.user_token(
        audience=API_AUDIENCE, client_app_id=CLIENT_A, username="jane.doe", version=version
    )
    caller = await validator.authenticate(f"Bearer {token}")
    assert caller.cwid == "jane.doe"
    assert caller.client_app_id == CLIENT_A
    assert not caller.app_only
    assert caller.tenant_id == entra.tenant_id
    assert caller.token_version == version
    assert caller.name == "Jane Doe"


@pytest.mark.parametrize("version", ["1.0", "2.0"])
async def test_app_only_token_yields_the_application(
    validator: TokenValidator, entra: EntraDouble, version: str
) -> None:
    token = entra.app_token(
        audience=API_AUDIENCE, client_app_id=CLIENT_A, version=version, roles=["LKPS.Agent"]
    )
    caller = await validator.authenticate(f"bearer {token}")
    assert caller.app_only
    assert caller.cwid == CLIENT_A
    assert caller.roles == frozenset({"LKPS.Agent"})


async def test_repeated_token_is_verified_once(
    validator: TokenValidator, entra: EntraDouble
) -> None:
    token = entra.user_token(audience=API_AUDIENCE, client_app_id=CLIENT_A)
    first = await validator.authenticate(f"Bearer {token}")
    for _ in range(5):
        assert await validator.authenticate(f"Bearer {token}") == first
    assert (validator.cache.misses, validator.cache.hits) == (1, 5)


async def test_cache_does_not_outlive_the_token(
    validator: TokenValidator, entra: EntraDouble, clock: FakeClock
) -> None:
    token = entra.user_token(audience=API_AUDIENCE, client_app_id=CLIENT_A, lifetime=120)
    await validator.authenticate(f"Bearer {token}")
    clock.advance(120 + 59)  # within exp + leeway: still served from the cache
    await validator.authenticate(f"Bearer {token}")
    assert (validator.cache.misses, validator.cache.hits) == (1, 1)
    clock.advance(1)  # past exp + leeway: the entry is gone and the token is checked again
    await validator.authenticate(f"Bearer {token}")
    assert validator.cache.misses == 2


async def test_expired_token_is_refused(validator: TokenValidator, entra: EntraDouble) -> None:
    token = entra.user_token(
        audience=API_AUDIENCE, client_app_id=CLIENT_A, issued_at=1_000_000_000, lifetime=60
    )
    with pytest.raises(Unauthenticated) as refused:
        await validator.authenticate(f"Bearer {token}")
    assert refused.value.reason == "token has expired"
    assert refused.value.message == "The access token is missing or invalid"


def test_verified_cache_is_bounded() -> None:
    from lkps.identity.validator import _Verified

    cache = VerifiedTokenCache(max_entries=3)
    for i in range(10):
        cache.put(bytes([i]), _Verified(caller=None, expires_at=1e12))  # type: ignore[arg-type]
    assert len(cache) == 3
    assert cache.get(bytes([9]), 0) is not None
    assert cache.get(bytes([0]), 0) is None


def test_leeway_over_a_minute_is_refused(entra: EntraDouble, clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="leeway"):
        TokenValidator(
            None,  # type: ignore[arg-type]
            clock,
            tenant_id=entra.tenant_id,
            audiences=[API_AUDIENCE],
            issuers=frozenset(),
            cwid_claims=["oid"],
            leeway_seconds=61,
        )


@pytest.mark.parametrize("claim", ["azp", "oid"])
async def test_non_guid_ids_are_refused(
    validator: TokenValidator, entra: EntraDouble, claim: str
) -> None:
    claims = entra.user_claims(audience=API_AUDIENCE, client_app_id=CLIENT_A)
    claims[claim] = "x" * 300
    with pytest.raises(Unauthenticated):
        await validator.authenticate(f"Bearer {entra.sign(claims)}")


async def test_very_long_cwid_is_cut(validator: TokenValidator, entra: EntraDouble) -> None:
    claims = entra.user_claims(audience=API_AUDIENCE, client_app_id=CLIENT_A)
    claims["preferred_username"] = "a" * 1000 + "@contoso.example"
    caller = await validator.authenticate(f"Bearer {entra.sign(claims)}")
    assert caller.cwid == "a" * 128
