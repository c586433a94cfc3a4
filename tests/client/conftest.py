"""Credential fakes shaped like azure-identity's. (`served`, LKPS on a socket for the
blocking client, is in tests/conftest.py.)"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class AccessToken:
    """Shaped like azure-core's AccessToken."""

    token: str
    expires_on: int


@dataclass
class FakeCredential:
    """A credential like azure-identity's: hands out `tokens` in turn, each valid for
    `lifetime` seconds, and remembers the scopes it was asked for."""

    tokens: list[str]
    lifetime: int = 3600
    scopes: list[tuple[str, ...]] = field(default_factory=list)

    def get_token(self, *scopes: str) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.tokens[len(self.scopes) - 1], int(time.time()) + self.lifetime)


@dataclass
class FakeAsyncCredential:
    """The azure.identity.aio flavour of FakeCredential."""

    tokens: list[str]
    lifetime: int = 3600
    scopes: list[tuple[str, ...]] = field(default_factory=list)

    async def get_token(self, *scopes: str) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.tokens[len(self.scopes) - 1], int(time.time()) + self.lifetime)
