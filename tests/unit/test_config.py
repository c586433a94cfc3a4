from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from lkps.config import DEV_AUDIENCE, DEV_TENANT_ID, ConfigurationError, Settings

pytestmark = pytest.mark.unit

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def servable(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": "prod",
        "livekit_url": "wss://livekit.example",
        "livekit_api_key": "key",
        "livekit_api_secret": "s" * 32,
        "entra_tenant_id": TENANT,
        "entra_audiences": "api://lkps, 5c1f3d9e-0a7b-4c2d-9e8f-112233445566",
        "entra_client_id": "5c1f3d9e-0a7b-4c2d-9e8f-112233445566",
        "entra_client_secret": "graph-secret",
        "audit_key": "a" * 32,
        "audit_signing_key": "audit-signing.pem",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def test_defaults_follow_the_contract() -> None:
    settings = Settings(env="dev")
    assert (settings.participant_token_ttl, settings.agent_token_ttl, settings.presence_ttl) == (
        900,
        3600,
        90,
    )
    assert settings.room_max_participants == 2
    assert settings.default_enforce_client_authz is True
    assert settings.cwid_claims == [
        "cwid",
        "onprem_sam_account_name",
        "preferred_username",
        "upn",
        "oid",
    ]
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8080, 1)
    assert settings.effective_authz_source == "file"
    assert servable().effective_authz_source == "graph"


def test_comma_separated_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LKPS_ENTRA_AUDIENCES", "api://a, b ,")
    monkeypatch.setenv("LKPS_CWID_CLAIMS", "upn,oid")
    settings = Settings()
    assert settings.entra_audiences == ["api://a", "b"]
    assert settings.cwid_claims == ["upn", "oid"]


def test_livekits_own_variables_are_not_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """`LKPS_*` alone describe a deployment: LiveKit's variables fill no LiveKit setting."""
    for name in ("LKPS_LIVEKIT_URL", "LKPS_LIVEKIT_API_KEY", "LKPS_LIVEKIT_API_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LIVEKIT_URL", "wss://livekit.from-the-environment.example")
    monkeypatch.setenv("LIVEKIT_API_KEY", "APIfromenvironment")
    monkeypatch.setenv("LIVEKIT_API_SECRET", "e" * 48)
    settings = Settings(env="prod")
    assert settings.livekit_url == settings.livekit_api_key == ""
    assert settings.livekit_api_secret.get_secret_value() == ""
    with pytest.raises(ConfigurationError, match="LKPS_LIVEKIT_API_SECRET is required"):
        settings.check_servable()


def test_jwks_url_and_issuers_derive_from_the_tenant() -> None:
    settings = servable(entra_tenant_id=TENANT.upper())
    assert settings.jwks_url == f"https://login.microsoftonline.com/{TENANT}/discovery/v2.0/keys"
    assert f"https://login.microsoftonline.com/{TENANT}/v2.0" in settings.accepted_issuers
    assert f"https://sts.windows.net/{TENANT}/" in settings.accepted_issuers


def test_complete_configuration_is_servable() -> None:
    servable().check_servable()


def test_missing_settings_are_all_named() -> None:
    with pytest.raises(ConfigurationError) as problems:
        Settings(env="prod").check_servable()
    for name in (
        "LKPS_LIVEKIT_URL",
        "LKPS_LIVEKIT_API_KEY",
        "LKPS_LIVEKIT_API_SECRET",
        "LKPS_ENTRA_TENANT_ID",
        "LKPS_ENTRA_AUDIENCES",
    ):
        assert name in str(problems.value)


@pytest.mark.parametrize("env", ["np", "prod"])
def test_non_dev_instances_never_trust_the_dev_identity_provider(env: str) -> None:
    with pytest.raises(ConfigurationError, match="development"):
        servable(env=env, entra_tenant_id=DEV_TENANT_ID).check_servable()
    with pytest.raises(ConfigurationError, match="development"):
        servable(env=env, entra_audiences=DEV_AUDIENCE).check_servable()
    with pytest.raises(ConfigurationError, match="development"):
        servable(env=env, entra_jwks_url="http://127.0.0.1:8080/dev/idp/x/keys").check_servable()


@pytest.mark.parametrize("env", ["np", "prod"])
def test_audit_keys_are_required_outside_dev(env: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        servable(env=env, audit_key="", audit_signing_key=None).check_servable()
    assert "LKPS_AUDIT_KEY or LKPS_AUDIT_KEY_FILE is required" in str(refused.value)
    assert "LKPS_AUDIT_SIGNING_KEY is required" in str(refused.value)
    servable(env=env, audit_key="", audit_key_file="audit.key").check_servable()


def test_short_livekit_secret_is_refused_outside_dev() -> None:
    with pytest.raises(ConfigurationError, match="32 characters"):
        servable(livekit_api_secret="secret").check_servable()


def test_file_source_needs_a_file_and_sqlite_one_worker() -> None:
    with pytest.raises(ConfigurationError, match="LKPS_AUTHZ_FILE"):
        servable(authz_source="file").check_servable()
    with pytest.raises(ConfigurationError, match="SQLite"):
        servable(authz_source="file", authz_file=Path("a.json"), workers=2).check_servable()


def test_graph_source_needs_a_secret_or_a_certificate() -> None:
    with pytest.raises(ConfigurationError, match="LKPS_ENTRA_CLIENT_SECRET"):
        servable(entra_client_secret="").check_servable()
    servable(
        entra_client_secret="", entra_client_certificate_path=Path("lkps.pem")
    ).check_servable()


def test_cors_origins_are_checked_with_the_rest() -> None:
    assert servable(cors_allow_origins="https://app.example.com").cors_origins()
    with pytest.raises(ConfigurationError) as refused:
        servable(cors_allow_origins="*, https://app.example.com/").check_servable()
    assert "LKPS_CORS_ALLOW_ORIGINS=* is only accepted with LKPS_ENV=dev" in str(refused.value)
    assert "write it as https://app.example.com" in str(refused.value)
    Settings(env="dev", cors_allow_origins=["*"]).cors_origins()  # dev may


def test_heartbeat_must_be_shorter_than_presence() -> None:
    with pytest.raises(ConfigurationError, match="HEARTBEAT"):
        servable(heartbeat_interval=90, presence_ttl=90).check_servable()


@pytest.mark.parametrize("leeway", [-1, 61, 300])
def test_leeway_is_bounded_by_a_minute(leeway: int) -> None:
    with pytest.raises(ValidationError):
        Settings(entra_leeway_seconds=leeway)


def test_config_file_adds_to_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "lkps.yaml"
    config.write_text(
        "presence_ttl: 120\nentra_audiences: [api://from-file]\nlivekit_url: wss://file.example\n"
    )
    monkeypatch.setenv("LKPS_CONFIG_FILE", str(config))
    monkeypatch.setenv("LKPS_LIVEKIT_URL", "wss://env.example")
    settings = Settings()
    assert settings.presence_ttl == 120
    assert settings.entra_audiences == ["api://from-file"]
    assert settings.livekit_url == "wss://env.example"  # the environment wins


def test_missing_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LKPS_CONFIG_FILE", str(tmp_path / "absent.yaml"))
    with pytest.raises(ConfigurationError, match="LKPS_CONFIG_FILE"):
        Settings()
