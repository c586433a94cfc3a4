"""Where the agent finds LKPS and how it proves who it is: one typed object, read from the
environment the way Azure tooling already reads it.

Entra settings use azure-identity's own variable names (`AZURE_CLIENT_ID`,
`AZURE_TENANT_ID`, `AZURE_CLIENT_SECRET`, `AZURE_CLIENT_CERTIFICATE_PATH`,
`AZURE_FEDERATED_TOKEN_FILE`, `AZURE_AUTHORITY_HOST`), so a container already set up for
`DefaultAzureCredential` needs nothing new; LKPS's own settings start with `LKPS_`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

from lkps_agent._errors import LkpsAgentError
from lkps_client import ENVIRONMENTS

__all__ = ["DEV_AGENT_ID", "AgentConfig", "AuthMode", "ConfigurationError"]

AuthMode = Literal[
    "default", "secret", "certificate", "managed_identity", "workload_identity", "dev"
]

# `lkps dev`'s identity provider (lkps/cli/dev.py; a test keeps the two in step): the app
# id it pre-authorizes for the dev client, the public dev secret, and the dev tenant.
DEV_AGENT_ID = "00000000-0000-4000-8000-0000000a9e47"
DEV_APP_SECRET = "lkps-dev-secret"  # public: only a dev instance accepts what it yields
DEV_TENANT_ID = "00000000-0000-4000-8000-00000000de70"
DEV_IDP_PATH = "/dev/idp"


class ConfigurationError(LkpsAgentError, ValueError):
    """The agent's configuration cannot work; the message says which setting to fix.

    An `LkpsAgentError` like every error the SDK raises (one `except` catches them all),
    and a `ValueError` as it always was."""


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    """Everything the SDK needs besides the agent's code.

    `lkps_url` and `scope` come from `environment` ("np", "prod" or "dev") unless given;
    `auth` picks the azure-identity credential (see `build_credential`).
    """

    lkps_url: str
    scope: str
    auth: AuthMode = "default"
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    certificate_path: str | None = None
    certificate_password: str | None = field(default=None, repr=False)
    federated_token_file: str | None = None
    # azure-identity's `authority` (https only); None: login.microsoftonline.com.
    authority_host: str | None = None
    # A PEM bundle for LKPS's and the authority's TLS certificates (a private CA).
    ca_bundle: str | None = None
    enforce_client_authz: bool | None = None
    version: str | None = None
    metadata: Mapping[str, Any] | None = None
    request_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.auth not in get_args(AuthMode):
            raise ConfigurationError(
                f"unknown auth mode {self.auth!r} (LKPS_AUTH): one of {', '.join(get_args(AuthMode))}"
            )
        if not self.lkps_url.startswith(("https://", "http://")):
            raise ConfigurationError(f"LKPS_URL must be an http(s) URL, not {self.lkps_url!r}")
        if not self.scope.endswith("/.default"):
            # An app-only token is always for `<resource>/.default`; anything else fails
            # at Entra with an error that does not mention LKPS.
            raise ConfigurationError(
                f"LKPS_SCOPE must be the LKPS App ID URI followed by /.default, not {self.scope!r}"
            )
        missing = [name for name, value in self._required().items() if not value]
        if missing:
            raise ConfigurationError(f"auth mode {self.auth!r} needs {', '.join(missing)}")
        if self.request_timeout <= 0:
            raise ConfigurationError("request_timeout must be positive")

    def _required(self) -> dict[str, str | None]:
        tenant, client = ("AZURE_TENANT_ID", self.tenant_id), ("AZURE_CLIENT_ID", self.client_id)
        match self.auth:
            case "secret":
                return dict([tenant, client, ("AZURE_CLIENT_SECRET", self.client_secret)])
            case "certificate":
                return dict(
                    [tenant, client, ("AZURE_CLIENT_CERTIFICATE_PATH", self.certificate_path)]
                )
            case "workload_identity":
                return dict(
                    [tenant, client, ("AZURE_FEDERATED_TOKEN_FILE", self.federated_token_file)]
                )
            case "dev":
                return dict([client, ("AZURE_CLIENT_SECRET", self.client_secret)])
            case _:
                # Managed identity: a client id only picks a user-assigned identity.
                # DefaultAzureCredential reads the environment by itself.
                return {}

    def with_options(self, **changes: Any) -> AgentConfig:
        """A copy with `changes` applied and checked again."""
        return replace(self, **changes)

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> AgentConfig:
        """Read the configuration from `environ` (default: `os.environ`); keyword
        arguments win over the environment.

        `LKPS_ENVIRONMENT` (np, prod, dev) fills in `LKPS_URL` and `LKPS_SCOPE`;
        `LKPS_AUTH` picks the credential (default: `dev` for the dev environment,
        else `default`, i.e. `DefaultAzureCredential`).
        """
        env = os.environ if environ is None else environ
        environment = overrides.pop("environment", None) or env.get("LKPS_ENVIRONMENT")
        known = ENVIRONMENTS.get(environment) if environment else None
        if environment and known is None:
            raise ConfigurationError(
                f"unknown LKPS_ENVIRONMENT {environment!r}: one of {', '.join(ENVIRONMENTS)}"
            )
        is_dev = environment == "dev"
        values: dict[str, Any] = {
            "lkps_url": env.get("LKPS_URL") or (known.base_url if known else None),
            "scope": env.get("LKPS_SCOPE") or (known.scope if known else None),
            "auth": env.get("LKPS_AUTH") or ("dev" if is_dev else "default"),
            "tenant_id": env.get("AZURE_TENANT_ID"),
            "client_id": env.get("AZURE_CLIENT_ID"),
            "client_secret": env.get("AZURE_CLIENT_SECRET"),
            "certificate_path": env.get("AZURE_CLIENT_CERTIFICATE_PATH"),
            "certificate_password": env.get("AZURE_CLIENT_CERTIFICATE_PASSWORD"),
            "federated_token_file": env.get("AZURE_FEDERATED_TOKEN_FILE"),
            "authority_host": env.get("AZURE_AUTHORITY_HOST"),
            "ca_bundle": env.get("LKPS_CA_BUNDLE"),
            "enforce_client_authz": _optional_bool(env, "LKPS_ENFORCE_CLIENT_AUTHZ"),
            "version": env.get("LKPS_AGENT_VERSION"),
        }
        if values["auth"] == "dev":
            values["client_id"] = values["client_id"] or DEV_AGENT_ID
            values["client_secret"] = values["client_secret"] or DEV_APP_SECRET
        values.update(overrides)
        for name, variable in (("lkps_url", "LKPS_URL"), ("scope", "LKPS_SCOPE")):
            if not values.get(name):
                raise ConfigurationError(
                    f"set LKPS_ENVIRONMENT (np, prod, dev) or {variable}: where is LKPS?"
                )
        return cls(**values)


def _optional_bool(env: Mapping[str, str], name: str) -> bool | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be true or false, not {raw!r}")
