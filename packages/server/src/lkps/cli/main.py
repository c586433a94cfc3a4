"""`lkps serve | dev | db | audit`."""

from __future__ import annotations

import typer

from lkps.cli import audit, db, dev, serve

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


def main() -> None:
    app()
