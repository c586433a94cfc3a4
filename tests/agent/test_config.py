"""`AgentConfig`: the environment variables an agent is configured with, and the mistakes
it refuses before anything starts."""

from __future__ import annotations

import pytest

from lkps.cli import dev as lkps_dev
from lkps.config import DEV_AUDIENCE, DEV_JWKS_PATH, DEV_TENANT_ID
from lkps_agent import DEV_AGENT_ID, AgentConfig, ConfigurationError
from lkps_agent import _config as agent_config
from lkps_client import ENVIRONMENTS

pytestmark = pytest.mark.unit

AGENT = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"


def test_np_and_prod_come_from_the_seed_tables() -> None:
    np = AgentConfig.from_environment({"LKPS_ENVIRONMENT": "np"})
    assert np.lkps_url == "https://eu-livekit-platform-service-np.int.bayer.com"
    assert np.scope == "api://livekit-platform-service-np.int.bayer.com/.default"
    assert np.auth == "default"  # DefaultAzureCredential
    prod = AgentConfig.from_environment({"LKPS_ENVIRONMENT": "prod"})
    assert prod.lkps_url == "https://eu-livekit-platform-service.int.bayer.com"
    assert prod.scope == "api://livekit-platform-service.int.bayer.com/.default"


def test_url_and_scope_override_the_environment() -> None:
    config = AgentConfig.from_environment(
        {
            "LKPS_ENVIRONMENT": "np",
            "LKPS_URL": "https://lkps.internal.example",
            "LKPS_SCOPE": "api://lkps-private/.default",
        }
    )
    assert (config.lkps_url, config.scope) == (
        "https://lkps.internal.example",
        "api://lkps-private/.default",
    )


def test_azure_identity_variables_are_read() -> None:
    config = AgentConfig.from_environment(
        {
            "LKPS_ENVIRONMENT": "prod",
            "LKPS_AUTH": "workload_identity",
            "AZURE_TENANT_ID": "tenant",
            "AZURE_CLIENT_ID": AGENT,
            "AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/azure/tokens/azure-identity-token",
            "AZURE_AUTHORITY_HOST": "https://login.microsoftonline.com",
            "LKPS_ENFORCE_CLIENT_AUTHZ": "false",
            "LKPS_AGENT_VERSION": "2.1.0",
        }
    )
    assert config.auth == "workload_identity"
    assert config.client_id == AGENT
    assert config.federated_token_file == "/var/run/secrets/azure/tokens/azure-identity-token"
    assert config.enforce_client_authz is False
    assert config.version == "2.1.0"


def test_keyword_arguments_win() -> None:
    config = AgentConfig.from_environment(
        {"LKPS_ENVIRONMENT": "np", "LKPS_AGENT_VERSION": "1"},
        version="2",
        metadata={"team": "voice"},
    )
    assert config.version == "2"
    assert config.metadata == {"team": "voice"}


def test_dev_uses_lkps_dev_and_its_dev_agent() -> None:
    config = AgentConfig.from_environment({"LKPS_ENVIRONMENT": "dev"})
    assert (config.lkps_url, config.scope) == ("http://127.0.0.1:8080", "api://lkps-dev/.default")
    assert config.auth == "dev"
    assert config.client_id == DEV_AGENT_ID


def test_dev_constants_match_lkps_dev() -> None:
    # The SDK cannot import the server; this keeps the two copies in step.
    assert agent_config.DEV_AGENT_ID == lkps_dev.DEV_AGENT_ID
    assert agent_config.DEV_APP_SECRET == lkps_dev.DEV_APP_SECRET
    assert agent_config.DEV_TENANT_ID == DEV_TENANT_ID
    assert agent_config.DEV_IDP_PATH == DEV_JWKS_PATH
    assert ENVIRONMENTS["dev"].scope == f"{DEV_AUDIENCE}/.default"


def test_secrets_stay_out_of_repr() -> None:
    config = AgentConfig.from_environment(
        {
            "LKPS_ENVIRONMENT": "np",
            "LKPS_AUTH": "secret",
            "AZURE_TENANT_ID": "t",
            "AZURE_CLIENT_ID": AGENT,
            "AZURE_CLIENT_SECRET": "very-secret-value",
            "AZURE_CLIENT_CERTIFICATE_PASSWORD": "pfx-password",
        }
    )
    assert "very-secret-value" not in repr(config)
    assert "pfx-password" not in repr(config)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "set LKPS_ENVIRONMENT"),
        ({"LKPS_ENVIRONMENT": "staging"}, "unknown LKPS_ENVIRONMENT 'staging'"),
        ({"LKPS_ENVIRONMENT": "np", "LKPS_AUTH": "password"}, "unknown auth mode 'password'"),
        ({"LKPS_URL": "lkps.example", "LKPS_SCOPE": "api://x/.default"}, "http"),
        ({"LKPS_URL": "https://lkps.example", "LKPS_SCOPE": "api://x"}, "/.default"),
        (
            {"LKPS_ENVIRONMENT": "np", "LKPS_AUTH": "secret", "AZURE_CLIENT_ID": AGENT},
            "AZURE_TENANT_ID, AZURE_CLIENT_SECRET",
        ),
        (
            {"LKPS_ENVIRONMENT": "np", "LKPS_AUTH": "certificate", "AZURE_TENANT_ID": "t"},
            "AZURE_CLIENT_ID, AZURE_CLIENT_CERTIFICATE_PATH",
        ),
        (
            {"LKPS_ENVIRONMENT": "np", "LKPS_AUTH": "workload_identity"},
            "AZURE_FEDERATED_TOKEN_FILE",
        ),
        ({"LKPS_ENVIRONMENT": "np", "LKPS_ENFORCE_CLIENT_AUTHZ": "maybe"}, "true or false"),
    ],
)
def test_mistakes_are_refused_with_the_setting_to_fix(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        AgentConfig.from_environment(environ)


def test_managed_identity_needs_no_client_id() -> None:
    # System-assigned: the platform knows the identity.
    config = AgentConfig.from_environment(
        {"LKPS_ENVIRONMENT": "np", "LKPS_AUTH": "managed_identity"}
    )
    assert config.client_id is None
