"""The metrics endpoint of `lkps serve`: its own port, so the API port never exposes it."""

from __future__ import annotations

import os
import tempfile

from lkps.config import ConfigurationError, Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_worker_metrics(settings: Settings) -> None:
    """With several workers, give them a shared folder for their samples. Must run
    before any worker (or this process) imports prometheus_client."""
    if settings.workers > 1 and not os.environ.get(MULTIPROC_ENV):
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="lkps-metrics-")


def start_metrics_server(settings: Settings) -> None:
    if settings.metrics_port == 0:
        return
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

    registry = REGISTRY
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    try:
        start_http_server(
            settings.metrics_port, addr=settings.metrics_host or settings.host, registry=registry
        )
    except OSError as exc:
        raise ConfigurationError(
            f"cannot serve metrics on port {settings.metrics_port} ({exc.strerror}); "
            "set LKPS_METRICS_PORT (0 turns metrics off)"
        ) from None
