"""`lkps db upgrade | current`."""

from __future__ import annotations

import typer

from lkps.cli.common import existing_database, load_settings, read_revision, run

app = typer.Typer(help="The database schema.", no_args_is_help=True)


@app.command("upgrade")
def upgrade_command(revision: str = typer.Argument("head")) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from lkps.store.engine import ensure_sqlite_directory, is_sqlite
    from lkps.store.migrate import current_revision, upgrade

    settings = load_settings()
    if is_sqlite(settings.database_url):
        ensure_sqlite_directory(settings.database_url)
    upgrade(settings.database_url, revision)
    typer.echo(f"schema at {run(current_revision(settings.database_url))}")


@app.command("current")
def current_command() -> None:
    """Show the schema revision, and whether it is the newest."""
    from lkps.store.migrate import head_revision

    revision = run(read_revision(existing_database(load_settings())))
    head = head_revision()
    typer.echo(
        f"{revision or 'empty'} ({'up to date' if revision == head else f'newest is {head}'})"
    )
    if revision != head:
        raise typer.Exit(1)
