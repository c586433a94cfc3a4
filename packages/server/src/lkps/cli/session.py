"""`lkps session start`: a session from the command line, as a client app would."""

from __future__ import annotations

import json
from typing import Any

import typer

from lkps.cli.common import fail
from lkps.cli.remote import JSON_OPTION, Remote, call, remote_command, to_json

app = typer.Typer(help="Sessions with agents.", no_args_is_help=True)


def parse_metadata(pairs: list[str], document: str | None) -> dict[str, Any] | None:
    metadata: dict[str, Any] = {}
    if document:
        try:
            loaded = json.loads(document)
        except ValueError as exc:
            fail(f"--metadata-json is not JSON: {exc}")
        if not isinstance(loaded, dict):
            fail("--metadata-json must be a JSON object")
        metadata.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--metadata takes key=value, not {pair!r}")
        metadata[key] = value
    return metadata if (pairs or document) else None


@app.command("start")
@remote_command
def start(
    agent: str = typer.Option(..., "--agent", help="The agent's Entra app id"),
    metadata: list[str] = typer.Option(
        [], "--metadata", help="key=value for the agent (repeatable)"
    ),
    metadata_json: str | None = typer.Option(
        None, "--metadata-json", help="Metadata as a JSON object"
    ),
    as_json: bool = JSON_OPTION,
    *,
    remote: Remote,
) -> None:
    """Start a session and print the room, the LiveKit URL and the participant token."""
    wanted = parse_metadata(metadata, metadata_json)
    with remote.connect() as client:
        session = call(lambda: client.start_session(agent, wanted))
    if as_json:
        typer.echo(to_json(session))
        return
    typer.echo(f"room         {session.room_name}")
    typer.echo(f"livekit_url  {session.livekit_url}")
    typer.echo(f"expires_at   {session.expires_at.isoformat() if session.expires_at else '-'}")
    typer.echo(f"token        {session.participant_token}")
