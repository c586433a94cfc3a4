"""The public surface of lkps_agent, as tests/client/test_public_api.py guards
lkps_client's: what `__all__` promises, that everything else lives in private `_modules`,
that every error is an `LkpsAgentError`, and that azure-identity's credentials fit."""

from __future__ import annotations

import dataclasses
import pkgutil

import pytest
from azure.identity.aio import ClientSecretCredential as AsyncClientSecretCredential

import lkps_agent
from lkps_agent import AgentConfig, LkpsAgentError, LkpsAgentServer
from lkps_client import AsyncTokenCredential

pytestmark = pytest.mark.unit

PUBLIC = {
    "DEV_AGENT_ID",
    "AgentConfig",
    "AgentLifecycle",
    "AgentState",
    "AgentStatus",
    "AuthMode",
    "ConfigurationError",
    "DevCredential",
    "LiveKitRejectedTokenError",
    "LkpsAgentError",
    "LkpsAgentServer",
    "RegistrationRefusedError",
    "UnsupportedLiveKitAgentsError",
    "build_credential",
    "job_count_load",
    "run_app",
}


def test_public_names() -> None:
    assert set(lkps_agent.__all__) == PUBLIC
    for name in PUBLIC:
        obj = getattr(lkps_agent, name)
        if isinstance(obj, type):
            # Tracebacks and reprs name what users can import, not a private module.
            assert obj.__module__ == "lkps_agent", name


def test_everything_else_is_private() -> None:
    """Every module is a `_module`, and the package shows nothing `__all__` does not list:
    a helper of one of them cannot become public by being imported into the package."""
    modules = [module.name for module in pkgutil.iter_modules(lkps_agent.__path__)]
    assert modules, "the package has modules"
    assert [name for name in modules if not name.startswith("_")] == []
    shown = {name for name in vars(lkps_agent) if not name.startswith("_")}
    assert shown == PUBLIC


def test_every_error_is_an_lkps_agent_error() -> None:
    errors = [obj for obj in vars(lkps_agent).values() if isinstance(obj, type)]
    for cls in errors:
        if issubclass(cls, Exception):
            assert issubclass(cls, LkpsAgentError), cls


def test_results_are_frozen() -> None:
    for name in ("AgentConfig", "AgentStatus"):
        cls = getattr(lkps_agent, name)
        assert dataclasses.is_dataclass(cls)
        assert vars(cls)["__dataclass_params__"].frozen, name


async def test_azure_identity_credentials_fit() -> None:
    # The annotations are the test (mypy); constructing makes no network call.
    tenant, client = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"
    credential = AsyncClientSecretCredential(tenant, client, "secret")
    as_protocol: AsyncTokenCredential = credential
    config = AgentConfig(lkps_url="https://lkps.test", scope="api://lkps.test/.default")
    server = LkpsAgentServer(config=config, credential=as_protocol)
    assert server.lkps_config is config
    await credential.close()
