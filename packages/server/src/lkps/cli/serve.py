"""`lkps serve`: the service, configured from the environment."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from types import FrameType

import typer

from lkps.cli.common import fail, load_settings, uvicorn_options
from lkps.cli.metrics_server import prepare_worker_metrics, start_metrics_server
from lkps.config import ConfigurationError, Settings
from lkps.logs import configure_logging


def serve(
    host: str | None = typer.Option(None, help="Bind address [LKPS_HOST]"),
    port: int | None = typer.Option(None, help="Port [LKPS_PORT]"),
    workers: int | None = typer.Option(None, help="Worker processes [LKPS_WORKERS]"),
) -> None:
    """Run LKPS from its LKPS_* configuration."""
    # Worker processes build their settings from the environment, so options go there.
    for name, value in {"LKPS_HOST": host, "LKPS_PORT": port, "LKPS_WORKERS": workers}.items():
        if value is not None:
            os.environ[name] = str(value)
    settings = load_settings()
    configure_logging(settings.log_level)
    try:
        settings.check_servable()
        _check_audit_keys(settings)
        # Once, here, before any worker starts: a store LKPS cannot run on is one line
        # naming the fix, not a traceback per worker (each worker checks again).
        from lkps.store.preflight import prepare_database

        asyncio.run(prepare_database(settings.database_url))
    except ConfigurationError as exc:
        fail(f"cannot serve: {exc}")
    prepare_worker_metrics(settings)
    try:
        start_metrics_server(settings)
    except ConfigurationError as exc:
        fail(str(exc))
    import uvicorn

    signal.signal(signal.SIGTERM, _stopped)
    uvicorn.run(
        "lkps.asgi:app_from_environment",
        factory=True,
        workers=settings.workers,
        timeout_graceful_shutdown=30,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        **uvicorn_options(settings),
    )


def _check_audit_keys(settings: Settings) -> None:
    """Read the audit key and the checkpoint signing key once, before any worker starts:
    an unreadable or malformed key is one line, not a traceback per worker."""
    from lkps.audit.checkpoints import CheckpointSigner
    from lkps.audit.keys import load_audit_keys

    load_audit_keys(settings)
    if settings.audit_signing_key is not None:
        CheckpointSigner.from_pem_file(settings.audit_signing_key)


def _stopped(signum: int, _frame: FrameType | None) -> None:
    """Exit 0 after a graceful stop on SIGTERM, whatever the number of workers.

    With one worker, uvicorn serves in this process: it catches SIGTERM, finishes the
    requests in flight, shuts the application down, then restores the handler it found
    and raises the signal again. Found the default, that ended the process as "killed by
    SIGTERM" (143) after a clean stop, which process managers count as a failure; found
    this one, the stop it already completed ends with status 0, as with several workers
    (uvicorn's supervisor exits 0). Before uvicorn installs its own, a SIGTERM ends the
    process at once, as the default would, but with 0: there was nothing to finish."""
    sys.exit(0)
