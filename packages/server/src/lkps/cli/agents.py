"""`lkps agents`: what a running LKPS knows about agents, and operator overrides."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from lkps.cli.common import fail
from lkps.cli.remote import JSON_OPTION, Remote, call, remote_command, to_json

if TYPE_CHECKING:
    from lkps_client import ConnectedWorker

app = typer.Typer(help="Agents of a running LKPS (app role LKPS.Admin or LKPS.Auditor).")


@app.callback(invoke_without_command=True)
@remote_command
def agents(ctx: typer.Context, as_json: bool = JSON_OPTION, *, remote: Remote) -> None:
    """List registered agents (as `lkps agents list`); or one of the commands below."""
    if ctx.invoked_subcommand is None:
        _list(as_json, remote)
        return
    # Options belong to the command they change: `lkps agents override ID --url …`.
    misplaced = [
        param.opts[0]
        for param in ctx.command.params
        if param.name and _from_command_line(ctx, param.name)
    ]
    if misplaced:
        fail(f"give {', '.join(misplaced)} after {ctx.invoked_subcommand!r}, not before it")


@app.command("list")
@remote_command
def list_agents(as_json: bool = JSON_OPTION, *, remote: Remote) -> None:
    """List registered agents: presence, workers, enforcement, version, last heartbeat;
    under each agent, its workers connected through the gateway (replica, connected
    since, status, load, jobs)."""
    _list(as_json, remote)


def _list(as_json: bool, remote: Remote) -> None:
    with remote.connect() as client:
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
        for worker in agent.workers:
            typer.echo(f"  worker {_worker_line(worker)}")
    if any(agent.override for agent in listed):
        typer.echo("* an operator override applies")


def _worker_line(worker: ConnectedWorker) -> str:
    """One connected worker (gateway mode): where, since when, and what it reported."""
    state = worker.status if worker.registered else "connecting"
    return (
        f"{worker.worker_id or '-'}  replica {worker.replica_id}  "
        f"since {worker.connected_at.isoformat(timespec='seconds')}  {state}  "
        f"load {worker.load:.2f}  jobs {worker.job_count}"
    )


@app.command("override")
@remote_command
def override(
    agent: str = typer.Argument(..., help="The agent's app id"),
    enforce: bool | None = typer.Option(
        None, "--enforce/--no-enforce", help="Force client authorization on or off"
    ),
    allow: list[str] = typer.Option([], "--allow", help="Client app id to allow (repeatable)"),
    *,
    remote: Remote,
) -> None:
    """Set an agent's authorization override (app role LKPS.Admin); replaces the old one."""
    with remote.connect() as client:
        result = call(
            lambda: client.set_authorization_override(
                agent, enforce_client_authz=enforce, additional_clients=allow
            )
        )
    typer.echo(to_json(result))


@app.command("clear-override")
@remote_command
def clear_override(
    agent: str = typer.Argument(..., help="The agent's app id"), *, remote: Remote
) -> None:
    """Remove an agent's override (app role LKPS.Admin)."""
    with remote.connect() as client:
        call(lambda: client.clear_authorization_override(agent))
    typer.echo(f"override of {agent} removed")


def _from_command_line(ctx: typer.Context, name: str) -> bool:
    # Not from its environment variable: LKPS_URL set in the shell is no mistake.
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"
