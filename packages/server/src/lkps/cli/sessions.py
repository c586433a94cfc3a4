"""`lkps sessions`: granted sessions followed through LiveKit's webhooks, read from a
running LKPS."""

from __future__ import annotations

from datetime import datetime

import typer

from lkps.cli.common import fail
from lkps.cli.remote import JSON_OPTION, Remote, call, remote_command, to_json

app = typer.Typer(help="Sessions of a running LKPS and their steps.", no_args_is_help=True)


@app.command("show")
@remote_command
def show(
    session_id: str = typer.Argument(..., help="The session id session start answered"),
    as_json: bool = JSON_OPTION,
    *,
    remote: Remote,
) -> None:
    """One session and its steps (yours, your app's, or any with LKPS.Auditor)."""
    with remote.connect() as client:
        session = call(lambda: client.get_session(session_id))
    if as_json:
        typer.echo(to_json(session))
        return
    duration = "-" if session.duration_seconds is None else f"{session.duration_seconds:.1f} s"
    typer.echo(f"session   {session.session_id}")
    typer.echo(f"room      {session.room_name} ({session.room_sid or '-'})")
    typer.echo(f"agent     {session.agent_id}")
    typer.echo(f"state     {session.state}  duration {duration}")
    for step in session.steps:
        typer.echo(f"  {step.at.isoformat(timespec='seconds')}  {step.step}")


@app.command("list")
@remote_command
def list_sessions(
    agent: str | None = typer.Option(None, "--agent", help="Only this agent's sessions"),
    since: str | None = typer.Option(None, "--since", help="Granted at or after (ISO 8601)"),
    state: str | None = typer.Option(None, "--state", help="granted, client_joined, ..."),
    limit: int = typer.Option(100, "--limit", min=1, max=1000),
    as_json: bool = JSON_OPTION,
    *,
    remote: Remote,
) -> None:
    """Sessions, newest grant first (app role LKPS.Auditor)."""
    moment = None
    if since is not None:
        try:
            moment = datetime.fromisoformat(since)
        except ValueError:
            fail(f"--since {since!r} is not an ISO 8601 date and time")
    with remote.connect() as client:
        found = call(
            lambda: client.list_sessions(agent_id=agent, since=moment, state=state, limit=limit)
        )
    if as_json:
        typer.echo(to_json(found))
        return
    typer.echo(f"{'session':36}  {'state':13}  {'granted':25}  {'duration':>9}  agent")
    for session in found:
        duration = "-" if session.duration_seconds is None else f"{session.duration_seconds:.0f}s"
        typer.echo(
            f"{session.session_id:36}  {session.state:13}  "
            f"{session.granted_at.isoformat(timespec='seconds'):25}  {duration:>9}  "
            f"{session.agent_id}"
        )
