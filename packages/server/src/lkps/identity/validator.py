"""Entra ID access-token validation (contract §1), with PyJWT doing the cryptography.

The checks, in order: a `Bearer` header; a JWS header naming RS256 and a `kid` the
tenant's JWKS holds; signature, `exp`/`nbf` (bounded leeway), issuer (v1 or v2 for the
configured tenant), audience; then `tid`. A token that passed is remembered, keyed by
its SHA-256, until it expires, so a client that reuses its token does not pay for an
RSA verification on every call.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from prometheus_client import Counter

from lkps.clock import Clock
from lkps.errors import Unauthenticated
from lkps.identity.caller import Caller, client_app_id, extract_cwid, is_app_only
from lkps.identity.jwks import JwksCache
from lkps.metrics import TOKEN_CACHE

log = logging.getLogger(__name__)

MAX_TOKEN_BYTES = 16_384
# A display identity (room names, LiveKit identity), not a key: long values are cut.
MAX_CWID_LENGTH = 128
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def is_guid(value: str) -> bool:
    """Entra's tenant, object and application ids are always GUIDs."""
    return bool(_GUID.match(value))


_REQUIRED_CLAIMS = ["exp", "iss", "aud", "tid", "sub"]

# `TOKEN_CACHE` children, made on first use: `.labels()` validates and locks each call.
_cache_results: dict[str, Counter] = {}


def _count(result: str) -> None:
    counter = _cache_results.get(result)
    if counter is None:
        counter = _cache_results[result] = TOKEN_CACHE.labels(result)
    counter.inc()


@dataclass(frozen=True, slots=True)
class _Verified:
    caller: Caller
    expires_at: float


class VerifiedTokenCache:
    """A bounded LRU of verified callers, keyed by token digest, valid until `exp`."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._entries: OrderedDict[bytes, _Verified] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, digest: bytes, now: float) -> _Verified | None:
        entry = self._entries.get(digest)
        if entry is None or now >= entry.expires_at:
            if entry is not None:
                del self._entries[digest]
            self.misses += 1
            _count("miss")
            return None
        self._entries.move_to_end(digest)
        self.hits += 1
        _count("hit")
        return entry

    def put(self, digest: bytes, entry: _Verified) -> None:
        if self._max <= 0:
            return
        self._entries[digest] = entry
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class TokenValidator:
    def __init__(
        self,
        keys: JwksCache,
        clock: Clock,
        *,
        tenant_id: str,
        audiences: Sequence[str],
        issuers: frozenset[str],
        cwid_claims: Sequence[str],
        leeway_seconds: int = 60,
        cache_size: int = 10_000,
    ) -> None:
        if not 0 <= leeway_seconds <= 60:
            raise ValueError("leeway must be between 0 and 60 seconds")
        self._keys = keys
        self._clock = clock
        self._tenant_id = tenant_id.lower()
        self._audiences = list(audiences)
        self._issuers = issuers
        self._cwid_claims = list(cwid_claims)
        self._leeway = leeway_seconds
        self.cache = VerifiedTokenCache(cache_size)

    async def authenticate(self, authorization: str | None) -> Caller:
        """The caller behind an `Authorization` header, or `Unauthenticated`."""
        token = bearer_token(authorization)
        digest = hashlib.sha256(token.encode()).digest()
        now = self._clock.now().timestamp()
        cached = self.cache.get(digest, now)
        if cached is not None:
            return cached.caller
        claims = await self._verify(token)
        caller = self._caller_from(claims)
        self.cache.put(digest, _Verified(caller, float(claims["exp"]) + self._leeway))
        return caller

    async def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"malformed token: {type(exc).__name__}") from None
        if header.get("alg") != "RS256":
            raise Unauthenticated(
                f"algorithm {header.get('alg')!r} is not accepted", kind="algorithm not accepted"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("token header has no kid")
        key = await self._keys.get(kid)
        if key is None:
            raise Unauthenticated("token is signed with an unknown key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=self._audiences,
                issuer=self._issuers,
                leeway=self._leeway,
                options={"require": _REQUIRED_CLAIMS, "verify_iat": False},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("token is not yet valid") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("token audience is not accepted") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("token issuer is not accepted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(
                f"token lacks the {exc.claim!r} claim", kind="token lacks a claim"
            ) from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("token signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"token rejected: {type(exc).__name__}") from None
        tid = str(claims.get("tid", ""))
        if not is_guid(tid) or tid.lower() != self._tenant_id:
            raise Unauthenticated("token is from another tenant")
        return claims

    def _caller_from(self, claims: Mapping[str, Any]) -> Caller:
        app_id = client_app_id(claims)
        if app_id is None or not is_guid(app_id):
            raise Unauthenticated("token names no client application (azp/appid GUID)")
        oid = claims.get("oid")
        if not isinstance(oid, str) or not is_guid(oid):
            raise Unauthenticated("token has no object id (oid GUID)")
        app_only = is_app_only(claims)
        cwid = app_id if app_only else extract_cwid(claims, self._cwid_claims)
        cwid = cwid[:MAX_CWID_LENGTH] if cwid else cwid
        if not cwid:
            raise Unauthenticated("token carries none of the CWID claims")
        roles = claims.get("roles")
        name = claims.get("name")
        return Caller(
            tenant_id=str(claims["tid"]).lower(),
            object_id=oid.lower(),
            client_app_id=app_id,
            app_only=app_only,
            cwid=cwid,
            name=name if isinstance(name, str) and name else None,
            roles=frozenset(r for r in roles if isinstance(r, str))
            if isinstance(roles, list)
            else frozenset(),
            token_version=str(claims.get("ver", "")),
        )


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("no bearer token")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("authorization is not a bearer token")
    if len(token) > MAX_TOKEN_BYTES:
        raise Unauthenticated("token is too large")
    return token
