"""Every auth mode, through the real azure-identity credential against the Entra double
over TLS, ends in a registration the real LKPS accepts with the agent's own app id."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from lkps.config import DEV_JWKS_PATH, DEV_TENANT_ID
from lkps_agent import AgentConfig, AgentLifecycle, DevCredential, build_credential
from lkps_agent._config import DEV_AGENT_ID, DEV_APP_SECRET
from lkps_client import AsyncLkpsClient
from lkps_testkit import EntraDouble, FederatedCredential, ServerThread, TlsFiles
from lkps_testkit.tls import generate_client_certificate
from tests.conftest import API_AUDIENCE, Served

pytestmark = [pytest.mark.api, pytest.mark.backends("sqlite")]

SCOPE = f"{API_AUDIENCE}/.default"
APP = "c0c0c0c0-0000-4000-8000-00000000a9e1"


@dataclass
class Authority:
    url: str
    ca: str
    entra: EntraDouble


@pytest.fixture
def authority(
    entra: EntraDouble, entra_tls_server: ServerThread, tls: TlsFiles
) -> Iterator[Authority]:
    yield Authority(entra_tls_server.url, str(tls.ca_cert), entra)
    entra.client_secrets.pop(APP, None)
    entra.client_certificates.pop(APP, None)
    entra.federated_credentials.pop(APP, None)
    entra.managed_identities.pop(APP, None)


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


async def register_with(served: Served, config: AgentConfig) -> str:
    """Register through the SDK's lifecycle with the credential `config` builds; the
    agent name LKPS answers with (the token's app id)."""
    credential = build_credential(config)
    try:
        async with AsyncLkpsClient(served.url, credential=credential, scope=config.scope) as client:
            lifecycle = AgentLifecycle(client, config)
            registration = await asyncio.wait_for(lifecycle.start(), 30)
            await lifecycle.stop()
            return registration.agent_name
    finally:
        await credential.close()  # type: ignore[attr-defined]


def base_config(authority: Authority, served: Served, **values: Any) -> AgentConfig:
    return AgentConfig(
        lkps_url=served.url,
        scope=SCOPE,
        tenant_id=authority.entra.tenant_id,
        authority_host=authority.url,
        ca_bundle=authority.ca,
        **values,
    )


async def test_client_secret(authority: Authority, served: Served) -> None:
    authority.entra.client_secrets[APP] = "agent-secret"
    config = base_config(
        authority, served, auth="secret", client_id=APP, client_secret="agent-secret"
    )
    assert await register_with(served, config) == APP


async def test_certificate(authority: Authority, served: Served, tmp_path: Path) -> None:
    certificate = generate_client_certificate(tmp_path / "agent.pem")
    authority.entra.client_certificates[APP] = [certificate.certificate]
    config = base_config(
        authority, served, auth="certificate", client_id=APP, certificate_path=str(certificate.path)
    )
    assert await register_with(served, config) == APP


async def test_workload_identity(authority: Authority, served: Served, tmp_path: Path) -> None:
    federated = FederatedCredential(
        issuer="https://oidc.aks.example/cluster-1", subject="system:serviceaccount:voice:agent"
    )
    authority.entra.federated_credentials[APP] = [federated]
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(federated.assertion())
    config = base_config(
        authority,
        served,
        auth="workload_identity",
        client_id=APP,
        federated_token_file=str(token_file),
    )
    assert await register_with(served, config) == APP


async def test_workload_identity_with_the_wrong_service_account_is_refused(
    authority: Authority, tmp_path: Path
) -> None:
    federated = FederatedCredential(
        issuer="https://oidc.aks.example/cluster-1", subject="system:serviceaccount:voice:agent"
    )
    authority.entra.federated_credentials[APP] = [federated]
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(federated.assertion(subject="system:serviceaccount:other:intruder"))
    config = AgentConfig(
        lkps_url="https://lkps.test",
        scope=SCOPE,
        auth="workload_identity",
        tenant_id=authority.entra.tenant_id,
        client_id=APP,
        federated_token_file=str(token_file),
        authority_host=authority.url,
        ca_bundle=authority.ca,
    )
    credential = build_credential(config)
    try:
        with pytest.raises(Exception, match="AADSTS70021"):
            await credential.get_token(SCOPE)
    finally:
        await credential.close()  # type: ignore[attr-defined]


async def test_managed_identity(
    authority: Authority, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    # App Service's flavour: the platform sets IDENTITY_ENDPOINT and IDENTITY_HEADER.
    authority.entra.managed_identities[APP] = "platform-header-secret"
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{authority.url}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "platform-header-secret")
    before = authority.entra.managed_identity_requests
    config = base_config(authority, served, auth="managed_identity", client_id=APP)
    assert await register_with(served, config) == APP
    assert authority.entra.managed_identity_requests == before + 1


async def test_default_credential_reads_the_azure_environment(
    authority: Authority, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    authority.entra.client_secrets[APP] = "env-secret"
    for name, value in {
        "AZURE_TENANT_ID": authority.entra.tenant_id,
        "AZURE_CLIENT_ID": APP,
        "AZURE_CLIENT_SECRET": "env-secret",
        "AZURE_AUTHORITY_HOST": authority.url,
    }.items():
        monkeypatch.setenv(name, value)
    config = AgentConfig.from_environment(
        {**os.environ, "LKPS_URL": served.url, "LKPS_SCOPE": SCOPE},
        ca_bundle=authority.ca,
    )
    assert config.auth == "default"
    assert await register_with(served, config) == APP


async def test_dev_credential_against_the_lkps_dev_identity_provider() -> None:
    # What `lkps dev` mounts: its identity provider, with the dev apps' public secret.
    idp = EntraDouble(tenant_id=DEV_TENANT_ID, client_secrets={DEV_AGENT_ID: DEV_APP_SECRET})
    app = Starlette(routes=[Mount(DEV_JWKS_PATH, idp.asgi_app())])
    with ServerThread(app) as server:
        config = AgentConfig.from_environment({"LKPS_ENVIRONMENT": "dev", "LKPS_URL": server.url})
        credential = build_credential(config)
        assert isinstance(credential, DevCredential)
        try:
            access = await credential.get_token(config.scope)
            claims = claims_of(access.token)
            assert claims["aud"] == "api://lkps-dev"
            assert claims["azp"] == DEV_AGENT_ID
            assert claims["tid"] == DEV_TENANT_ID
            wrong = DevCredential(server.url, client_id=DEV_AGENT_ID, client_secret="guess")
            with pytest.raises(PermissionError, match="AADSTS7000215"):
                await wrong.get_token(config.scope)
            await wrong.close()
        finally:
            await credential.close()
        assert "lkps-dev-secret" not in repr(credential)
