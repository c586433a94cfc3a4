"""`lkps serve | dev | db | audit | session | agents | sessions`."""

from __future__ import annotations

import typer

from lkps.cli import agents, audit, db, dev, serve, session, sessions

app = typer.Typer(
    name="lkps",
    help="LiveKit Platform Service: Entra ID in, scoped LiveKit tokens out, all of it audited.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)
app.add_typer(dev.app, name="dev")
app.add_typer(db.app, name="db")
app.add_typer(audit.app, name="audit")
app.add_typer(session.app, name="session")
app.add_typer(agents.app, name="agents")
app.add_typer(sessions.app, name="sessions")


def main() -> None:
    app()
