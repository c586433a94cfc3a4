"""The metrics endpoint of `lkps serve`: its own port, so the API port never exposes it."""

from __future__ import annotations

import os
import re
import tempfile

from lkps.config import ConfigurationError, Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# A worker process's samples of `live*` gauges (lkps_gateway_workers): gauge_livesum_<pid>.db.
LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


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
        from lkps.cli.live_metrics import LiveProcessesCollector

        registry = CollectorRegistry()
        LiveProcessesCollector(registry)
    try:
        start_http_server(
            settings.metrics_port, addr=settings.metrics_host or settings.host, registry=registry
        )
    except OSError as exc:
        raise ConfigurationError(
            f"cannot serve metrics on port {settings.metrics_port} ({exc.strerror}); "
            "set LKPS_METRICS_PORT (0 turns metrics off)"
        ) from None


def dead_processes(path: str) -> list[int]:
    """The worker processes that left `live*` gauge samples in `path` and are gone (uvicorn
    restarts a worker that crashed; a killed one never cleans up)."""
    pids = {int(m.group(1)) for name in os.listdir(path) if (m := LIVE_GAUGE_FILE.fullmatch(name))}
    return sorted(pid for pid in pids if not _alive(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive
        return True
    return True
