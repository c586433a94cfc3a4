"""`lkps agents`: what a running LKPS knows about agents, and operator overrides."""

from __future__ import annotations

import typer

from lkps.cli.remote import (
    ENV_OPTION,
    JSON_OPTION,
    SCOPE_OPTION,
    TOKEN_OPTION,
    URL_OPTION,
    call,
    connect,
    to_json,
)

app = typer.Typer(help="Agents of a running LKPS (app role LKPS.Admin or LKPS.Auditor).")


@app.callback(invoke_without_command=True)
def agents(
    ctx: typer.Context,
    as_json: bool = JSON_OPTION,
    url: str | None = URL_OPTION,
    token: str | None = TOKEN_OPTION,
    scope: str | None = SCOPE_OPTION,
    env: str | None = ENV_OPTION,
) -> None:
    """List registered agents: presence, workers, enforcement, version, last heartbeat."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = (url, token, scope, env)
        return
    with connect(url, token, scope, env) as client:
        listed = call(client.list_agents)
    if as_json:
        typer.echo(to_json(listed))
        return
    typer.echo(
        f"{'agent':36}  {'present':7}  {'workers':7}  {'enforce':10}  {'version':12}  last heartbeat"
    )
    for agent in listed:
        enforce = str(agent.enforce_client_authz).lower() + ("*" if agent.override else "")
        heartbeat = (
            agent.last_heartbeat_at.isoformat(timespec="seconds")
            if agent.last_heartbeat_at
            else "-"
        )
        typer.echo(
            f"{agent.agent_id:36}  {'yes' if agent.present else 'no':7}  "
            f"{agent.active_registrations:<7}  {enforce:10}  {agent.version or '-':12}  {heartbeat}"
        )
    if any(agent.override for agent in listed):
        typer.echo("* an operator override applies")


@app.command("override")
def override(
    ctx: typer.Context,
    agent: str = typer.Argument(..., help="The agent's app id"),
    enforce: bool | None = typer.Option(
        None, "--enforce/--no-enforce", help="Force client authorization on or off"
    ),
    allow: list[str] = typer.Option([], "--allow", help="Client app id to allow (repeatable)"),
) -> None:
    """Set an agent's authorization override (app role LKPS.Admin); replaces the old one."""
    with connect(*ctx.obj) as client:
        result = call(
            lambda: client.set_authorization_override(
                agent, enforce_client_authz=enforce, additional_clients=allow
            )
        )
    typer.echo(to_json(result))


@app.command("clear-override")
def clear_override(ctx: typer.Context, agent: str = typer.Argument(...)) -> None:
    """Remove an agent's override (app role LKPS.Admin)."""
    with connect(*ctx.obj) as client:
        call(lambda: client.clear_authorization_override(agent))
    typer.echo(f"override of {agent} removed")
