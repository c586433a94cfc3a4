"""FastAPI's native OpenTelemetry is decided once at start-up, not looked up per request."""

from __future__ import annotations

import pytest

from lkps.app import native_telemetry

pytestmark = pytest.mark.unit


def test_off_without_opentelemetry_configuration() -> None:
    assert native_telemetry({"PATH": "/usr/bin", "LKPS_ENV": "np"}) == {
        "tracing": False,
        "metrics": False,
        "logs": False,
    }


@pytest.mark.parametrize(
    "variable",
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_PYTHON_TRACER_PROVIDER", "FASTAPI_OTEL_AUTO_CONFIGURE"],
)
def test_fastapis_defaults_when_opentelemetry_is_configured(variable: str) -> None:
    assert native_telemetry({variable: "true"}) == {}
