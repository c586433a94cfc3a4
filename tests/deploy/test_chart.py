"""The Helm chart (deploy/helm/lkps) renders, for np and prod, manifests that Kubernetes
accepts and a configuration `lkps serve` accepts: every LKPS_* variable it renders is a
setting, every setting required outside dev is rendered, and secrets come only from
existing Secrets."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from starlette.routing import BaseRoute

from lkps.api import gateway, health
from lkps.config import ConfigurationError, Settings
from tests.deploy.conftest import DEPLOY, ROOT, run_tool

pytestmark = pytest.mark.deploy

CHART = DEPLOY / "helm" / "lkps"
ENVIRONMENTS = ("np", "prod")
# Kinds from CRDs, which kubernetes-validate has no schema for.
CUSTOM_KINDS = {"ServiceMonitor"}
# The chart's minimum (Chart.yaml kubeVersion) and the newest schemas there are.
KUBERNETES_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
# Settings whose values are secrets: only ever from a Secret (secretKeyRef).
SECRET_VALUES = {
    "LKPS_LIVEKIT_API_SECRET",
    "LKPS_ENTRA_CLIENT_SECRET",
    "LKPS_AUDIT_KEY",
    "LKPS_DATABASE_URL",
}
# Settings naming files that hold secrets: only ever in a mounted Secret.
SECRET_FILES = {
    "LKPS_AUDIT_KEY_FILE",
    "LKPS_AUDIT_SIGNING_KEY",
    "LKPS_AUDIT_PREVIOUS_KEY_FILES",
    "LKPS_ENTRA_CLIENT_CERTIFICATE_PATH",
}
# What a Secret would hold, for building the Settings a pod would see.
FROM_SECRETS = {
    "LKPS_LIVEKIT_API_SECRET": "s" * 40,
    "LKPS_ENTRA_CLIENT_SECRET": "entra-client-secret",
    "LKPS_DATABASE_URL": "postgresql+asyncpg://lkps:password@db:5432/lkps",
    "LKPS_REDIS_URL": "redis://:password@redis:6379/0",
}


def settings_of(env: dict[str, str]) -> Settings:
    """The Settings a pod with this environment gets. Validated from the mapping alone
    (model_validate reads no environment variable of this process)."""
    return Settings.model_validate(
        {name.removeprefix("LKPS_").lower(): v for name, v in env.items()}
    )


def values(environment: str) -> Path:
    return CHART / f"values-{environment}.yaml"


@functools.cache
def _template(helm: Path, args: tuple[str, ...]) -> tuple[int, str]:
    result = run_tool(helm, "template", "lkps", CHART, "--namespace", "lkps", *args)
    return result.returncode, result.stdout if result.returncode == 0 else result.stderr


def render(helm: Path, *args: str) -> list[dict[str, Any]]:
    status, output = _template(helm, args)
    assert status == 0, output
    return [doc for doc in yaml.safe_load_all(output) if doc]


def render_error(helm: Path, *args: str) -> str:
    status, output = _template(helm, args)
    assert status != 0, "the chart rendered"
    return output


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}"
    return found[0]


def container(docs: list[dict[str, Any]], kind: str = "Deployment") -> dict[str, Any]:
    containers: list[dict[str, Any]] = one(docs, kind)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def pod_env(docs: list[dict[str, Any]], kind: str = "Deployment") -> dict[str, str]:
    """The serving container's LKPS_* environment as the pod sees it, with each
    secretKeyRef replaced by what the Secret would hold."""
    env = {}
    for item in container(docs, kind)["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            assert set(item["valueFrom"]) == {"secretKeyRef"}, item
            env[item["name"]] = FROM_SECRETS[item["name"]]
    return env


@pytest.fixture(params=ENVIRONMENTS)
def environment(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def docs(helm: Path, environment: str) -> list[dict[str, Any]]:
    return render(helm, "-f", str(values(environment)))


def test_helm_lint_passes(helm: Path, environment: str) -> None:
    result = run_tool(helm, "lint", "--strict", CHART, "-f", values(environment))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_are_valid_kubernetes(docs: list[dict[str, Any]], version: str) -> None:
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Service", "Ingress", "PodDisruptionBudget", "NetworkPolicy"} <= kinds
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, version, strict=True)


def test_every_rendered_variable_is_a_setting(docs: list[dict[str, Any]]) -> None:
    known = {f"LKPS_{name.upper()}" for name in Settings.model_fields}
    rendered = {
        item["name"]
        for kind in ("Deployment", "Job")
        for item in container(docs, kind)["env"]
        if item["name"].startswith("LKPS_")
    }
    assert rendered - known == set()


def test_lkps_serve_accepts_the_rendered_configuration(
    docs: list[dict[str, Any]], environment: str
) -> None:
    """`Settings.check_servable` is what `lkps serve` refuses to start without: every
    setting required outside dev is rendered, and none is left at the dev default."""
    settings = settings_of(pod_env(docs))
    settings.check_servable()
    assert settings.env == environment
    assert settings.database_url.startswith("postgresql+asyncpg://")
    assert settings.workers > 1


def test_the_required_settings_are_the_ones_lkps_serve_names(docs: list[dict[str, Any]]) -> None:
    """Leaving out any one of these rendered variables makes `lkps serve` refuse to start
    naming it, so the check above is not passing by accident."""
    env = pod_env(docs)
    refused = {}
    for name in env:
        try:
            settings_of({key: value for key, value in env.items() if key != name}).check_servable()
        except ConfigurationError as error:
            refused[name] = str(error)
    assert set(refused) == {
        "LKPS_ENV",  # dev, the default, reads an allow-list file there is not
        "LKPS_LIVEKIT_URL",
        "LKPS_LIVEKIT_API_KEY",
        "LKPS_LIVEKIT_API_SECRET",
        "LKPS_ENTRA_TENANT_ID",
        "LKPS_ENTRA_AUDIENCES",
        "LKPS_ENTRA_CLIENT_ID",
        "LKPS_ENTRA_CLIENT_CERTIFICATE_PATH",
        "LKPS_AUDIT_KEY_FILE",
        "LKPS_AUDIT_SIGNING_KEY",
        "LKPS_DATABASE_URL",  # SQLite, the default, serves one worker
    }
    assert "LKPS_AUDIT_SIGNING_KEY is required outside dev" in refused["LKPS_AUDIT_SIGNING_KEY"]


def test_secrets_come_only_from_existing_secrets(docs: list[dict[str, Any]]) -> None:
    assert not [doc for doc in docs if doc["kind"] in ("Secret", "ConfigMap")]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    secret_volumes = {volume["name"] for volume in pod["volumes"] if "secret" in volume}
    secret_dirs = [
        mount["mountPath"]
        for mount in container(docs)["volumeMounts"]
        if mount["name"] in secret_volumes
    ]
    for item in container(docs)["env"]:
        name = item["name"]
        if name in SECRET_VALUES:
            assert "value" not in item, name
            assert set(item["valueFrom"]) == {"secretKeyRef"}, name
        if name in SECRET_FILES:
            paths = item["value"].split(",")
            assert all(
                any(path.startswith(f"{directory}/") for directory in secret_dirs) for path in paths
            ), name


@pytest.mark.parametrize(
    "name",
    sorted(SECRET_VALUES | SECRET_FILES | {"LKPS_HOST", "LKPS_PORT", "LKPS_METRICS_PORT"}),
)
def test_values_cannot_carry_secrets_or_what_the_chart_sets(helm: Path, name: str) -> None:
    error = render_error(helm, "-f", str(values("np")), "--set", f"config.{name}=x")
    assert "values don't meet the specifications of the schema" in error
    assert name in error


def test_values_accept_only_lkps_variables(helm: Path) -> None:
    error = render_error(helm, "-f", str(values("np")), "--set", "config.PATH=/tmp")
    assert "PATH" in error


@pytest.mark.parametrize(
    "name",
    [
        "LKPS_LIVEKIT_URL",
        "LKPS_LIVEKIT_API_KEY",
        "LKPS_ENTRA_TENANT_ID",
        "LKPS_ENTRA_AUDIENCES",
        "LKPS_ENTRA_CLIENT_ID",
    ],
)
def test_a_missing_setting_fails_the_render_naming_it(helm: Path, name: str) -> None:
    error = render_error(helm, "-f", str(values("prod")), "--set", f"config.{name}=")
    assert f"config.{name} is required" in error


def test_entra_client_secret_instead_of_a_certificate(helm: Path) -> None:
    docs = render(helm, "-f", str(values("np")), "--set", "secrets.entraCredential=secret")
    env = {item["name"]: item for item in container(docs)["env"]}
    assert env["LKPS_ENTRA_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "lkps",
        "key": "entra-client-secret",
    }
    assert "LKPS_ENTRA_CLIENT_CERTIFICATE_PATH" not in env
    settings_of(pod_env(docs)).check_servable()


def test_a_static_allow_list_instead_of_graph(helm: Path) -> None:
    docs = render(
        helm,
        *("-f", str(values("np"))),
        *("--set", "secrets.entraCredential=none"),
        *("--set", "config.LKPS_AUTHZ_SOURCE=file"),
        *("--set", "authzFile.configMap=lkps-authz"),
        *("--set", "secrets.redisUrlKey=redis-url"),
    )
    env = pod_env(docs)
    assert env["LKPS_AUTHZ_FILE"] == "/etc/lkps/authz/authz.yaml"
    assert "LKPS_ENTRA_CLIENT_SECRET" not in env
    settings_of(env).check_servable()
    mounts = {mount["mountPath"] for mount in container(docs)["volumeMounts"]}
    assert "/etc/lkps/authz" in mounts


def route_paths(routes: list[BaseRoute]) -> set[str]:
    return {str(getattr(route, "path", "")) for route in routes}


def test_probes_and_routes_are_lkps_own(docs: list[dict[str, Any]]) -> None:
    lkps = container(docs)
    assert lkps["readinessProbe"]["httpGet"]["path"] == "/api/health/ready"
    assert lkps["livenessProbe"]["httpGet"]["path"] == "/api/health"
    assert {"/api/health", "/api/health/ready"} <= route_paths(health.router.routes)
    ports = {port["name"]: port["containerPort"] for port in lkps["ports"]}
    env = pod_env(docs)
    assert ports == {"http": int(env["LKPS_PORT"]), "metrics": int(env["LKPS_METRICS_PORT"])}
    assert env["LKPS_HOST"] == "0.0.0.0"  # noqa: S104 (inside the pod, behind the Service)

    # The Ingress carries the API and the agent gateway's WebSocket, never the metrics.
    rules = one(docs, "Ingress")["spec"]["rules"]
    paths = {
        (path["path"], path["pathType"]): path["backend"]["service"]["port"]["name"]
        for rule in rules
        for path in rule["http"]["paths"]
    }
    assert paths == {("/api", "Prefix"): "http", ("/agent", "Exact"): "http"}
    assert "/agent" in route_paths(gateway.router.routes)


def test_pods_run_locked_down_and_stop_gracefully(docs: list[dict[str, Any]]) -> None:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    for kind in ("Deployment", "Job"):
        security = container(docs, kind)["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert {"name": "tmp", "mountPath": "/tmp"} in container(docs, kind)["volumeMounts"]
    # lkps serve finishes requests for up to 30 s after SIGTERM, after the preStop pause,
    # which the image's own Python takes (it has no shell and no `sleep`).
    program, flag, code = container(docs)["lifecycle"]["preStop"]["exec"]["command"]
    assert (program, flag) == ("python3", "-c")
    match = re.fullmatch(r"import time; time\.sleep\((\d+)\)", code)
    assert match is not None, code
    pause = int(match.group(1))
    assert pause > 0
    assert pod["terminationGracePeriodSeconds"] > 30 + pause
    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert set(container(docs)["resources"]) == {"requests", "limits"}


def test_migrations_run_before_install_and_upgrade(docs: list[dict[str, Any]]) -> None:
    job = one(docs, "Job")
    hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
    assert hooks == {"pre-install", "pre-upgrade"}
    assert container(docs, "Job")["args"] == ["db", "upgrade"]
    # The database URL and nothing else secret reaches it.
    assert {item["name"] for item in container(docs, "Job")["env"]} == {
        "LKPS_ENV",
        "LKPS_DATABASE_URL",
    }


def test_replicas_disruption_budget_and_autoscaling(helm: Path) -> None:
    np, prod = (render(helm, "-f", str(values(name))) for name in ENVIRONMENTS)
    assert one(np, "Deployment")["spec"]["replicas"] == 2
    assert not [doc for doc in np if doc["kind"] == "HorizontalPodAutoscaler"]
    assert "replicas" not in one(prod, "Deployment")["spec"]  # the HPA's to set
    assert one(prod, "HorizontalPodAutoscaler")["spec"]["minReplicas"] == 3
    for docs in (np, prod):
        assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
        assert one(docs, "ServiceMonitor")["spec"]["endpoints"][0]["port"] == "metrics"
        policy = one(docs, "NetworkPolicy")["spec"]
        assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
        assert [rule["ports"][0]["port"] for rule in policy["ingress"]] == ["http", "metrics"]


def environments_table() -> dict[str, dict[str, str]]:
    """docs/environments.md's table: row name -> {"np": ..., "prod": ...}."""
    rows = {}
    for line in (ROOT / "docs" / "environments.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[1].startswith("`"):
            rows[cells[0]] = {"np": cells[1].strip("`"), "prod": cells[2].strip("`")}
    return rows


def test_the_values_files_match_the_environments_table(
    docs: list[dict[str, Any]], environment: str
) -> None:
    table = environments_table()
    url = table["LKPS URL"][environment]
    scope = table["token scope (clients and agents)"][environment]
    env = pod_env(docs)
    assert env["LKPS_ENV"] == environment
    assert env["LKPS_ENTRA_AUDIENCES"] == scope.removesuffix("/.default")
    assert env["LKPS_AGENT_GATEWAY_URL"] == re.sub(r"^https://", "wss://", url)


def test_previous_audit_keys_are_mounted_beside_the_current_one(helm: Path) -> None:
    docs = render(
        helm, "-f", str(values("prod")), "--set", "auditKeys.previousKeyKeys={old-1.key,old-2.key}"
    )
    settings = settings_of(pod_env(docs))
    settings.check_servable()
    assert [str(path) for path in settings.audit_previous_key_files] == [
        "/run/secrets/lkps-audit/old-1.key",
        "/run/secrets/lkps-audit/old-2.key",
    ]
    volume = next(
        volume
        for volume in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
        if volume["name"] == "audit-keys"
    )
    assert [item["key"] for item in volume["secret"]["items"]] == [
        "audit.key",
        "audit-signing.pem",
        "old-1.key",
        "old-2.key",
    ]
