"""`lkps audit verify | tail | export`: the operator's view of the trail."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal, TypeVar

import typer

from lkps.cli.common import fail, load_settings, run

if TYPE_CHECKING:
    from lkps.audit import AuditLog

app = typer.Typer(help="The audit trail.", no_args_is_help=True)

T = TypeVar("T")


def _with_log(action: Callable[[AuditLog], Awaitable[T]]) -> T:
    # Imported here so that `lkps --help` and `lkps dev token` start quickly.
    from lkps.audit import AuditLog
    from lkps.store import Database
    from lkps.store.migrate import current_revision

    settings = load_settings()

    async def go() -> T:
        if await current_revision(settings.database_url) is None:
            fail(f"no LKPS schema at {settings.database_url}: start LKPS or run `lkps db upgrade`")
        db = Database.from_url(settings.database_url, timeout=settings.database_timeout_seconds)
        try:
            return await action(AuditLog(db))
        finally:
            await db.dispose()

    return run(go())


@app.command("verify")
def verify() -> None:
    """Check the hash chain; exit 1 and name the first broken link if it is broken."""
    result = _with_log(lambda log: log.verify())
    typer.echo(result.describe())
    if not result.ok:
        raise typer.Exit(1)


@app.command("tail")
def tail(
    lines: int = typer.Option(20, "-n", "--lines", min=1, help="How many records"),
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing new records"),
) -> None:
    """Print the newest records as JSON lines."""

    async def go(log: AuditLog) -> None:
        records = await log.latest(lines)
        for record in records:
            _print(record.as_json(), sys.stdout)
        last = records[-1].seq if records else 0
        while follow:
            await asyncio.sleep(1)
            async for record in log.records(after=last):
                _print(record.as_json(), sys.stdout)
                last = record.seq

    with contextlib.suppress(KeyboardInterrupt):
        _with_log(go)


@app.command("export")
def export(
    format: Literal["jsonl"] = typer.Option("jsonl", "--format", help="Output format"),
    output: Path | None = typer.Option(None, "-o", "--output", help="File (default: stdout)"),
) -> None:
    """Write every record, oldest first, with its hashes, for archival or analysis."""

    async def go(log: AuditLog) -> int:
        count = 0
        stream = output.open("w", encoding="utf-8") if output else sys.stdout
        try:
            async for record in log.records():
                _print(record.as_json(), stream)
                count += 1
        finally:
            if output:
                stream.close()
        return count

    count = _with_log(go)
    if output:
        typer.echo(f"exported {count} records to {output}", err=True)


def _print(document: dict[str, object], stream: IO[str]) -> None:
    stream.write(json.dumps(document, ensure_ascii=False) + "\n")
