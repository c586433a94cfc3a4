"""The agent's Entra credential: one azure-identity credential per auth mode, or the
development identity provider of `lkps dev`.

Async credentials only (`azure.identity.aio`): the SDK runs inside the worker's event
loop, where a blocking token fetch would stall job dispatch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from lkps_agent._config import DEV_IDP_PATH, DEV_TENANT_ID, AgentConfig
from lkps_client import AccessTokenLike, AsyncTokenCredential

__all__ = ["DevCredential", "build_credential"]


def build_credential(config: AgentConfig) -> AsyncTokenCredential:
    """The credential `config.auth` names. The caller owns it (close it with `close()`)."""
    if config.auth == "dev":
        return DevCredential(
            config.lkps_url,
            client_id=str(config.client_id),
            client_secret=str(config.client_secret),
            ca_bundle=config.ca_bundle,
        )

    from azure.identity import aio

    options: dict[str, Any] = {}
    if config.authority_host:
        options["authority"] = config.authority_host
    if config.ca_bundle:
        options["connection_verify"] = config.ca_bundle
    tenant, client = str(config.tenant_id), str(config.client_id)
    match config.auth:
        case "secret":
            return aio.ClientSecretCredential(tenant, client, str(config.client_secret), **options)
        case "certificate":
            return aio.CertificateCredential(
                tenant,
                client,
                certificate_path=config.certificate_path,
                password=config.certificate_password,
                **options,
            )
        case "workload_identity":
            return aio.WorkloadIdentityCredential(
                tenant_id=tenant,
                client_id=client,
                token_file_path=config.federated_token_file,
                **options,
            )
        case "managed_identity":
            if config.client_id:
                options["client_id"] = config.client_id
            return aio.ManagedIdentityCredential(**options)
        case _:
            # Reads AZURE_* itself: environment, workload identity, managed identity, ...
            return aio.DefaultAzureCredential(**options)


@dataclass(frozen=True)
class _DevAccessToken:
    token: str
    expires_on: int


class DevCredential:
    """Client credentials against the identity provider that `lkps dev` serves.

    azure-identity only talks to https authorities, and `lkps dev` serves plain http on
    the loopback, hence this small credential; its tokens name the development tenant,
    which every non-dev LKPS refuses.
    """

    def __init__(
        self,
        lkps_url: str,
        *,
        client_id: str,
        client_secret: str,
        tenant_id: str = DEV_TENANT_ID,
        ca_bundle: str | None = None,
    ) -> None:
        self._token_url = f"{lkps_url.rstrip('/')}{DEV_IDP_PATH}/{tenant_id}/oauth2/v2.0/token"
        self._client_id = client_id
        self._client_secret = client_secret
        self._http = httpx.AsyncClient(verify=ca_bundle or True, timeout=10.0)

    def __repr__(self) -> str:
        return f"DevCredential(client_id={self._client_id!r})"

    async def get_token(self, *scopes: str, **_: Any) -> AccessTokenLike:
        response = await self._http.post(
            self._token_url,
            data={
                "grant_type": "client_credentials",
                "client_id": self._client_id,
                "client_secret": self._client_secret,
                "scope": " ".join(scopes),
            },
        )
        if response.status_code != 200:
            # The body is the identity provider's OAuth error: no secret in it.
            raise PermissionError(
                f"the lkps dev identity provider refused client {self._client_id}: "
                f"HTTP {response.status_code} {response.text[:200]}"
            )
        body = response.json()
        return _DevAccessToken(body["access_token"], int(time.time()) + int(body["expires_in"]))

    async def close(self) -> None:
        await self._http.aclose()
