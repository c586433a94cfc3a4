"""`lkps audit verify | tail | search | export | checkpoints`: the operator's view of the
trail.

Each command reads the local store (LKPS_DATABASE_URL) or, given `--url`/`--env`, a
running LKPS through its audit API (app role LKPS.Auditor). Read locally, the chain is
verified with the audit keys of the settings (LKPS_AUDIT_KEY and its previous keys) and,
given `--checkpoints`, against signed checkpoints with the public key alone.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar

import typer

from lkps.cli.common import (
    existing_database,
    fail,
    load_settings,
    read_revision,
    run,
    shown_database,
)
from lkps.cli.remote import Remote, call, remote_command, to_json

if TYPE_CHECKING:
    from lkps.audit import AuditFilter, AuditLog

app = typer.Typer(help="The audit trail.", no_args_is_help=True)

T = TypeVar("T")

EVENT_OPTION = typer.Option(None, "--event", help="e.g. session.start, agent.register")
OUTCOME_OPTION = typer.Option(None, "--outcome", help="granted, denied or recorded")
AGENT_OPTION = typer.Option(None, "--agent", help="Agent app id")
CLIENT_OPTION = typer.Option(None, "--client", help="Client app id")
CWID_OPTION = typer.Option(None, "--cwid", help="Caller CWID")
SINCE_OPTION = typer.Option(None, "--since", help="ISO 8601 with a time zone (inclusive)")
UNTIL_OPTION = typer.Option(None, "--until", help="ISO 8601 with a time zone (exclusive)")


def _with_log(action: Callable[[AuditLog], Awaitable[T]]) -> T:
    # Imported here so that `lkps --help` and `lkps dev token` start quickly.
    from lkps.audit import AuditLog
    from lkps.audit.keys import load_audit_keys
    from lkps.config import ConfigurationError
    from lkps.store import Database

    settings = load_settings()
    url = existing_database(settings, elsewhere=", or ask a running LKPS with --url")
    try:
        keys = load_audit_keys(settings)
    except ConfigurationError as error:
        fail(str(error))

    async def go() -> T:
        if await read_revision(url) is None:
            fail(f"no LKPS schema at {shown_database(url)}: start LKPS or run `lkps db upgrade`")
        db = Database.from_url(url, timeout=settings.database_timeout_seconds)
        try:
            return await action(AuditLog(db, keys=keys))
        finally:
            await db.dispose()

    return run(go())


@app.command("verify")
@remote_command
def verify(
    checkpoints: Path | None = typer.Option(
        None,
        "--checkpoints",
        help="Signed checkpoints, one JSON object a line (as logged or exported): "
        "the trail must hold every record up to the newest, unchanged",
    ),
    public_key: Path | None = typer.Option(
        None, "--public-key", help="Ed25519 public key (PEM) that signed the checkpoints"
    ),
    legacy_until: int = typer.Option(
        0,
        "--legacy-until",
        min=0,
        help="Records up to this sequence number were chained before the chain was keyed",
    ),
    *,
    remote: Remote,
) -> None:
    """Check the hash chain; exit 1 and name the first broken link if it is broken.

    With the audit key (LKPS_AUDIT_KEY, previous keys in LKPS_AUDIT_PREVIOUS_KEY_FILES)
    every record's keyed hash is checked; with --checkpoints and --public-key, the
    trail against the signed heads (without the audit key: links and checkpoints only).
    """
    if checkpoints is not None and public_key is None:
        fail("--checkpoints needs --public-key (the PEM of the signing key's public key)")
    if public_key is not None and checkpoints is None:
        fail("--public-key verifies --checkpoints; give both")
    if remote.chosen and legacy_until:
        fail("--legacy-until checks the local store with its keys; drop --url/--env")
    if remote.chosen and checkpoints and public_key:
        # The trail as the running LKPS serves it, checked here against the signed heads
        # with the public key alone: what LKPS says of its own chain is not asked.
        signed = _read_checkpoints(checkpoints, public_key)
        with remote.connect() as client:
            documents = call(lambda: [json.loads(to_json(r)) for r in client.audit_records()])
        result = run(_verify_documents(documents, signed))
        ok, line = result.ok, result.describe()
    elif remote.chosen:
        with remote.connect() as client:
            report = call(client.verify_audit)
        ok, line = (
            report.ok,
            (
                f"audit chain intact: {report.records_checked} records, head at {report.head_seq}"
                if report.ok
                else f"audit chain broken at record {report.broken_at_seq}: {report.problem}"
            ),
        )
    else:
        heads = _read_checkpoints(checkpoints, public_key) if checkpoints and public_key else None
        result = _with_log(lambda log: log.verify(legacy_until=legacy_until, checkpoints=heads))
        ok, line = result.ok, result.describe()
    typer.echo(line)
    if not ok:
        raise typer.Exit(1)


async def _verify_documents(documents: list[dict[str, Any]], signed: dict[int, str]) -> Any:
    """Records as the audit API serves them (newest first), verified in sequence order
    against `signed` without the audit key: their links, the signed heads, and the
    content of records chained without a key."""
    from lkps.audit import AuditRecord
    from lkps.audit.chain import verify_chain

    records = sorted((AuditRecord.from_json(document) for document in documents), key=_seq)

    async def in_order() -> AsyncIterator[AuditRecord]:
        for record in records:
            yield record

    head_seq, head_hash = (records[-1].seq, records[-1].hash) if records else (0, "")
    return await verify_chain(in_order(), head_seq, head_hash, checkpoints=signed)


def _seq(record: Any) -> int:
    return int(record.seq)


def _read_checkpoints(path: Path, public_key: Path) -> dict[int, str]:
    """The signed heads; a checkpoint that does not verify fails the check (exit 1)."""
    from lkps.audit.checkpoints import CheckpointError, load_public_key, read_checkpoints

    try:
        key = load_public_key(public_key)
    except CheckpointError as error:
        fail(str(error))
    try:
        with path.open(encoding="utf-8") as lines:
            signed = read_checkpoints(lines, key)
    except OSError as error:
        fail(f"{path} cannot be read ({type(error).__name__})")
    except (CheckpointError, UnicodeDecodeError) as error:
        fail(f"{path}: {error}", code=1)
    if not signed:
        fail(f"{path} holds no checkpoint")
    return signed


@app.command("checkpoints")
@remote_command
def checkpoints(
    limit: int = typer.Option(1000, "-n", "--limit", min=1, max=1000, help="At most this many"),
    output: Path | None = typer.Option(None, "-o", "--output", help="File (default: stdout)"),
    *,
    remote: Remote,
) -> None:
    """Write the newest signed checkpoints, newest first, one JSON object a line (what
    `verify --checkpoints` reads): from the local store, or from a running LKPS with
    --url (LKPS.Auditor). Keep copies outside the database: the log stream carries each
    one too (field `audit_checkpoint`)."""
    if remote.chosen:
        with remote.connect() as client:
            documents = call(lambda: client.audit_checkpoints(limit))
    else:
        documents = _with_log(lambda log: _checkpoints_local(log, limit))
    stream = output.open("w", encoding="utf-8") if output else sys.stdout
    try:
        for document in documents:
            _print(document, stream)
    finally:
        if output:
            stream.close()


async def _checkpoints_local(log: AuditLog, limit: int) -> list[dict[str, Any]]:
    from lkps.audit.checkpoints import Checkpointer

    return [checkpoint.as_json() for checkpoint in await Checkpointer.stored(log, limit)]


@app.command("tail")
@remote_command
def tail(
    lines: int = typer.Option(20, "-n", "--lines", min=1, help="How many records"),
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing new records"),
    *,
    remote: Remote,
) -> None:
    """Print the newest records as JSON lines, oldest of them first."""
    try:
        if remote.chosen:
            _tail_remote(lines, follow, remote.connect())
        else:
            _with_log(lambda log: _tail_local(log, lines, follow))
    except KeyboardInterrupt:
        pass


async def _tail_local(log: AuditLog, lines: int, follow: bool) -> None:
    records = await log.latest(lines)
    for record in records:
        _print(record.as_json(), sys.stdout)
    last = records[-1].seq if records else 0
    while follow:
        await asyncio.sleep(1)
        async for record in log.records(after=last):
            _print(record.as_json(), sys.stdout)
            last = record.seq


def _tail_remote(lines: int, follow: bool, client: Any) -> None:
    with client:
        # The client pages lazily: errors surface while iterating, so iterate inside call().
        newest = call(lambda: _take(client.audit_records(page_size=min(lines, 1000)), lines))
        for record in reversed(newest):
            typer.echo(to_json(record))
        last = newest[0].seq if newest else 0
        while follow:
            time.sleep(2)
            fresh = call(lambda seen=last: list(_until_seq(client.audit_records(), seen)))
            for record in reversed(fresh):
                typer.echo(to_json(record))
            last = fresh[0].seq if fresh else last


@app.command("search")
@remote_command
def search(
    event: str | None = EVENT_OPTION,
    outcome: str | None = OUTCOME_OPTION,
    agent: str | None = AGENT_OPTION,
    client_app: str | None = CLIENT_OPTION,
    cwid: str | None = CWID_OPTION,
    since: datetime | None = SINCE_OPTION,
    until: datetime | None = UNTIL_OPTION,
    limit: int = typer.Option(100, "-n", "--limit", min=1, help="At most this many records"),
    *,
    remote: Remote,
) -> None:
    """Records matching every filter given, newest first, as JSON lines."""
    for name, value in (("--since", since), ("--until", until)):
        if value is not None and value.tzinfo is None:
            fail(f"{name} needs a time zone, e.g. 2026-11-23T12:00:00Z")
    if remote.chosen:
        with remote.connect() as client:
            found = call(
                lambda: _take(
                    client.audit_records(
                        event=event,
                        outcome=outcome,
                        agent_id=agent,
                        client_app_id=client_app,
                        cwid=cwid,
                        since=since,
                        until=until,
                        page_size=min(limit, 1000),
                    ),
                    limit,
                )
            )
        for record in found:
            typer.echo(to_json(record))
        return
    from lkps.audit import AuditFilter

    where = AuditFilter(
        event=event,
        outcome=outcome,
        agent_id=agent.lower() if agent else None,
        client_app_id=client_app.lower() if client_app else None,
        actor_cwid=cwid,
        since=since,
        until=until,
    )
    for document in _with_log(lambda log: _search_local(log, where, limit)):
        _print(document, sys.stdout)


async def _search_local(log: AuditLog, where: AuditFilter, limit: int) -> list[dict[str, Any]]:
    return [record.as_json() for record in await log.query(where, limit=limit)]


@app.command("export")
@remote_command
def export(
    format: Literal["jsonl"] = typer.Option("jsonl", "--format", help="Output format"),
    output: Path | None = typer.Option(None, "-o", "--output", help="File (default: stdout)"),
    *,
    remote: Remote,
) -> None:
    """Write every record, oldest first, with its hashes, for archival or analysis."""
    stream = output.open("w", encoding="utf-8") if output else sys.stdout
    try:
        if remote.chosen:
            with remote.connect() as client:
                # The API pages newest first; archives read best oldest first.
                documents = call(lambda: [json.loads(to_json(r)) for r in client.audit_records()])
            documents.reverse()
            for document in documents:
                _print(document, stream)
            count = len(documents)
        else:
            count = _with_log(lambda log: _export_local(log, stream))
    finally:
        if output:
            stream.close()
    if output:
        typer.echo(f"exported {count} records to {output}", err=True)


async def _export_local(log: AuditLog, stream: IO[str]) -> int:
    count = 0
    async for record in log.records():
        _print(record.as_json(), stream)
        count += 1
    return count


def _take(records: Iterator[T], limit: int) -> list[T]:
    taken: list[T] = []
    for record in records:
        taken.append(record)
        if len(taken) >= limit:
            break
    return taken


def _until_seq(records: Iterator[Any], seq: int) -> Iterator[Any]:
    for record in records:
        if record.seq <= seq:
            return
        yield record


def _print(document: dict[str, object], stream: IO[str]) -> None:
    stream.write(json.dumps(document, ensure_ascii=False) + "\n")
