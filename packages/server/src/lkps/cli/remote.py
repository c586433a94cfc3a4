"""Talking to a running LKPS from the command line, through `lkps-client`.

Every command that can talk to a running LKPS takes `--url/--token/--scope/--env` as
options of its own (`lkps agents override ID --url …`, `lkps audit search --url …`), all
defined once here by `@remote_command`.

Where the bearer token comes from, in order: `--token` (or LKPS_TOKEN); else Azure's
DefaultAzureCredential (az login, managed identity, workload identity, ...) for `--scope`
(or LKPS_SCOPE, or the scope of `--env`).
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import typer

from lkps.cli.common import fail

if TYPE_CHECKING:
    from lkps_client import LkpsClient

URL_OPTION = typer.Option(None, "--url", envvar="LKPS_URL", help="LKPS base URL [LKPS_URL]")
TOKEN_OPTION = typer.Option(
    None, "--token", envvar="LKPS_TOKEN", help="Bearer token [LKPS_TOKEN]", show_default=False
)
SCOPE_OPTION = typer.Option(
    None, "--scope", envvar="LKPS_SCOPE", help="Entra scope for DefaultAzureCredential [LKPS_SCOPE]"
)
ENV_OPTION = typer.Option(None, "--env", help="A known deployment: np or prod (URL and scope)")
JSON_OPTION = typer.Option(False, "--json", help="Print JSON")

_REMOTE_OPTIONS = {
    "url": URL_OPTION,
    "token": TOKEN_OPTION,
    "scope": SCOPE_OPTION,
    "env": ENV_OPTION,
}


@dataclass(frozen=True)
class Remote:
    """The running LKPS a command was pointed at (`--url/--token/--scope/--env`)."""

    url: str | None = None
    token: str | None = None
    scope: str | None = None
    env: str | None = None

    @property
    def chosen(self) -> bool:
        """Whether the command names a running LKPS (else it reads the local store)."""
        return self.url is not None or self.env is not None

    def connect(self) -> LkpsClient:
        return connect(self.url, self.token, self.scope, self.env)


def remote_command(command: Callable[..., None]) -> Callable[..., None]:
    """`command` with `--url/--token/--scope/--env` as options of its own, shown in its
    `--help`; it receives them as `remote: Remote`. One definition for every command that
    can talk to a running LKPS, so that all of them take the options in the same place."""
    signature = inspect.signature(command, eval_str=True)
    kept = [parameter for parameter in signature.parameters.values() if parameter.name != "remote"]
    added = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=str | None
        )
        for name, option in _REMOTE_OPTIONS.items()
    ]

    @functools.wraps(command)
    def with_remote(*args: Any, **kwargs: Any) -> None:
        remote = Remote(**{name: kwargs.pop(name) for name in _REMOTE_OPTIONS})
        command(*args, remote=remote, **kwargs)

    parameters = [*kept, *added]
    # Typer reads the options from the signature and its (resolved) annotations.
    with_remote.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    with_remote.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_remote


def connect(url: str | None, token: str | None, scope: str | None, env: str | None) -> LkpsClient:
    from lkps_client import LkpsClient

    credential = None
    if token is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    if env is not None:
        try:
            return LkpsClient.for_environment(
                env, credential=credential, token=token, base_url=url, scope=scope
            )
        except ValueError as exc:
            fail(str(exc))
    if url is None:
        fail("say which LKPS: --url URL (or LKPS_URL), or --env np|prod")
    if credential is not None and scope is None:
        fail("without --token, give --scope (the LKPS API scope, e.g. api://<lkps>/.default)")
    return LkpsClient(url, credential=credential, scope=scope, token=token)


def call(action: Any) -> Any:
    """Run a client call; turn its typed errors into one clear line and exit code 1."""
    from lkps_client import LkpsError

    try:
        return action()
    except LkpsError as exc:
        fail(str(exc), code=1)


def to_json(value: Any) -> str:
    def plain(item: Any) -> Any:
        if is_dataclass(item) and not isinstance(item, type):
            return {k: plain(v) for k, v in asdict(item).items()}
        if isinstance(item, dict):
            return {k: plain(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [plain(v) for v in item]
        if isinstance(item, datetime):
            return item.isoformat()
        return item

    return json.dumps(plain(value), ensure_ascii=False)
