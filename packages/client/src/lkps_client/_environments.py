"""The LKPS deployments a client can name instead of spelling out URL and scope."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["ENVIRONMENTS", "Environment"]


@dataclass(frozen=True)
class Environment:
    """Where an LKPS deployment is served, and the Entra scope its tokens must carry."""

    name: str
    base_url: str
    scope: str


ENVIRONMENTS: Mapping[str, Environment] = MappingProxyType(
    {
        # `lkps dev` on this machine, with its development identity provider.
        "dev": Environment(
            name="dev",
            base_url="http://127.0.0.1:8080",
            scope="api://lkps-dev/.default",
        ),
        "np": Environment(
            name="np",
            base_url="https://eu-livekit-platform-service-np.int.bayer.com",
            scope="api://livekit-platform-service-np.int.bayer.com/.default",
        ),
        "prod": Environment(
            name="prod",
            base_url="https://eu-livekit-platform-service.int.bayer.com",
            scope="api://livekit-platform-service.int.bayer.com/.default",
        ),
    }
)
"""`lkps dev`, and the seed environments from the LKPS client developer guide. Read-only: pass
`base_url=`/`scope=` to `for_environment`, or an `Environment` of your own."""


def resolve_environment(
    environment: str | Environment, base_url: str | None, scope: str | None
) -> Environment:
    if isinstance(environment, str):
        try:
            environment = ENVIRONMENTS[environment]
        except KeyError:
            known = ", ".join(sorted(ENVIRONMENTS))
            raise ValueError(f"unknown LKPS environment {environment!r} (known: {known})") from None
    return Environment(
        name=environment.name,
        base_url=base_url or environment.base_url,
        scope=scope or environment.scope,
    )
