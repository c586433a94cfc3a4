"""The metrics server's collector in multiprocess mode (imported by `start_metrics_server`
once PROMETHEUS_MULTIPROC_DIR is set: prometheus_client reads it when imported)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, multiprocess

from lkps.cli.metrics_server import dead_processes


class LiveProcessesCollector(multiprocess.MultiProcessCollector):
    """The worker processes' samples added up, as prometheus_client's collector does,
    after dropping those of `live*` gauges written by processes that died: the gateway
    connections a dead worker relayed (lkps_gateway_workers) closed with it."""

    def __init__(self, registry: CollectorRegistry, path: str | None = None) -> None:
        super().__init__(registry, path)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Any]:
        for pid in dead_processes(self._path):
            multiprocess.mark_process_dead(pid, self._path)  # type: ignore[no-untyped-call]
        collected: Iterable[Any] = super().collect()  # type: ignore[no-untyped-call]
        return collected
