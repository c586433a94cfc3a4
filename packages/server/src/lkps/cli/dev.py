"""`lkps dev`: LKPS on a laptop, with its own development identity provider.

The identity provider comes from `lkps-testkit` (never in a production install); its
RSA key lives in the state folder so that `lkps dev token` in another terminal signs
tokens the running instance accepts. Dev tokens name the development tenant, which
every non-dev configuration refuses (`Settings.check_servable`).
"""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
import warnings
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import typer

from lkps.cli.common import fail, load_settings, uvicorn_options
from lkps.cli.livekit_dev import (
    DEFAULT_HTTP_PORT,
    LKPS_PREFIX,
    PREFIX,
    LiveKitPlan,
    LiveKitProcess,
    LiveKitUnavailable,
    find_binary,
    webhook_url,
)
from lkps.config import DEV_AUDIENCE, DEV_JWKS_PATH, DEV_TENANT_ID, ConfigurationError, Settings
from lkps.logs import configure_logging
from lkps.origins import origin_of

if TYPE_CHECKING:
    from lkps_testkit.entra import EntraDouble

# A client application and an agent that the dev allow-list pre-authorizes together,
# so the README walk-through works on the first try.
DEV_CLIENT_ID = "00000000-0000-4000-8000-00000000c11e"
DEV_AGENT_ID = "00000000-0000-4000-8000-0000000a9e47"
# The dev identity provider's token endpoint gives these two apps app-only tokens for this
# secret (client credentials), so agents built on lkps-agent run against `lkps dev` as they
# would against Entra. Public on purpose: only a dev instance accepts what it yields.
DEV_APP_SECRET = "lkps-dev-secret"
DEV_HOST, DEV_PORT = "127.0.0.1", 8080
DEV_URL = f"http://{DEV_HOST}:{DEV_PORT}"  # lkps-client's "dev" environment
DEV_LIVEKIT_URL = "ws://127.0.0.1:7880"  # `livekit-server --dev`
DEV_LIVEKIT_KEY, DEV_LIVEKIT_SECRET = "devkey", "secret"  # `livekit-server --dev`'s pair
# Browser origins a dev instance allows unless LKPS_CORS_ALLOW_ORIGINS says otherwise,
# besides its own: pages from local development servers, whatever port they took.
DEV_CORS_ORIGINS = ("http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*")

STATE_DIR_OPTION = typer.Option(
    Path("var/dev"), "--state-dir", help="Dev signing key and allow-list"
)

app = typer.Typer(help="Run LKPS for development, and mint tokens it accepts.")


def identity_provider(state_dir: Path) -> EntraDouble:
    try:
        from lkps_testkit.entra import EntraDouble, SigningKey
    except ImportError:
        fail("`lkps dev` needs the lkps-testkit distribution (uv sync installs it)")
    key_file = state_dir / "idp-signing-key.pem"
    if key_file.exists():
        key = SigningKey.from_pem(key_file.read_bytes())
    else:
        state_dir.mkdir(parents=True, exist_ok=True)
        key = SigningKey.generate()
        key_file.write_bytes(key.to_pem())
        key_file.chmod(0o600)
    return EntraDouble(
        tenant_id=DEV_TENANT_ID,
        keys=[key],
        user_domain="dev.lkps.example",
        client_secrets={DEV_AGENT_ID: DEV_APP_SECRET, DEV_CLIENT_ID: DEV_APP_SECRET},
        # Any other app id too: `lkps dev agent --agent ID` runs the example as that agent.
        any_client_secret=DEV_APP_SECRET,
    )


def dev_settings(
    base: Settings, *, host: str, port: int, state_dir: Path, livekit_url: str | None = None
) -> Settings:
    """The dev instance's settings: `base` (LKPS_* variables) with the dev identity
    provider, the dev allow-list, and LiveKit at `livekit_url` (the livekit-server `lkps
    dev` runs) or else LKPS_LIVEKIT_URL or `livekit-server --dev`'s address."""
    if not base.is_dev:
        fail(
            f"`lkps dev` refuses LKPS_ENV={base.env}: its identity provider is for development only"
        )
    update: dict[str, object] = {
        "host": host,
        "port": port,
        "entra_tenant_id": DEV_TENANT_ID,
        "entra_audiences": [DEV_AUDIENCE],
        "entra_jwks_url": f"http://{host}:{port}{DEV_JWKS_PATH}/{DEV_TENANT_ID}/discovery/v2.0/keys",
        "livekit_url": livekit_url or base.livekit_url or DEV_LIVEKIT_URL,
        "livekit_api_key": base.livekit_api_key or DEV_LIVEKIT_KEY,
        "cors_allow_origins": base.cors_allow_origins or [origin_of(host, port), *DEV_CORS_ORIGINS],
        # Direct unless asked otherwise: a newcomer's first agent is `lkps dev register`
        # (presence from heartbeats, no LiveKit needed), which the gateway would never
        # count. LKPS_AGENT_CONNECTION=gateway tries the gateway (lkps-agent follows).
        "agent_connection": (
            base.agent_connection if "agent_connection" in base.model_fields_set else "direct"
        ),
    }
    if not base.livekit_api_secret.get_secret_value():
        update["livekit_api_secret"] = type(base.livekit_api_secret)(DEV_LIVEKIT_SECRET)
    if base.effective_authz_source == "file" and base.authz_file is None:
        authz_file = state_dir / "authz.json"
        if not authz_file.exists():
            from lkps.authorization.file import write_authorization_file

            state_dir.mkdir(parents=True, exist_ok=True)
            write_authorization_file(authz_file, {DEV_AGENT_ID: [DEV_CLIENT_ID]})
        update["authz_source"] = "file"
        update["authz_file"] = authz_file
    return base.model_copy(update=update)


@app.callback(invoke_without_command=True)
def dev(
    ctx: typer.Context,
    host: str = typer.Option(DEV_HOST, help="Bind address"),
    port: int = typer.Option(DEV_PORT, help="Port"),
    state_dir: Path = STATE_DIR_OPTION,
    no_livekit: bool = typer.Option(
        False, "--no-livekit", help="Do not run a livekit-server (bring your own)"
    ),
    livekit_port: int = typer.Option(
        DEFAULT_HTTP_PORT,
        "--livekit-port",
        min=0,
        max=65_535,
        help="The livekit-server's port when free (0: any free port)",
    ),
) -> None:
    """Start LKPS with SQLite and the development identity provider, and a livekit-server
    in dev mode beside it when one is available (see --no-livekit)."""
    if ctx.invoked_subcommand is not None:
        return
    import httpx
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from lkps.api.playground import install_playground
    from lkps.app import create_app

    base = load_settings()
    livekit = None if no_livekit else _livekit_plan(base, livekit_port)
    settings = dev_settings(
        base,
        host=host,
        port=port,
        state_dir=state_dir,
        livekit_url=livekit.url if livekit else None,
    )
    try:
        settings.cors_origins()
    except ConfigurationError as exc:
        fail(f"cannot serve: {exc}")
    idp = identity_provider(state_dir)
    idp_app = Starlette(routes=[Mount(DEV_JWKS_PATH, idp.asgi_app())])
    # Two processes in one terminal: each line says whose it is. Alone, bare JSON as `serve`.
    configure_logging(settings.log_level, prefix=LKPS_PREFIX if livekit else "")
    # `livekit-server --dev` signs with a 6-byte secret; PyJWT warns about it on each token.
    warnings.filterwarnings("ignore", message="The HMAC key is")
    application = create_app(
        settings,
        jwks_transport=httpx.ASGITransport(app=idp_app),
        mounts={DEV_JWKS_PATH: idp.asgi_app()},
    )
    install_playground(
        application,
        _PlaygroundSignIn(idp, settings.auditor_role),
        livekit_url=settings.livekit_url,
        agent_id=DEV_AGENT_ID,
        client_id=DEV_CLIENT_ID,
    )
    server = None
    if livekit is not None:
        server = LiveKitProcess(
            livekit,
            livekit.config(
                api_key=settings.livekit_api_key,
                api_secret=settings.livekit_api_secret.get_secret_value(),
                webhook_url=webhook_url(settings.host, settings.port),
            ),
            state_dir,
            sys.stdout,
        )
        server.start()
    # Flushed: read from a file or pipe (`lkps dev > dev.log`) before the first request.
    print(_banner(settings, state_dir, livekit=server), flush=True)
    try:
        uvicorn.run(application, **uvicorn_options(settings))
    finally:
        if server is not None:
            server.stop()


class _PlaygroundSignIn:
    """The playground's sign-in (lkps.api.playground.DevSignIn): the dev identity
    provider's tokens, as `lkps dev token` mints them."""

    def __init__(self, idp: EntraDouble, auditor_role: str) -> None:
        self._idp = idp
        self._auditor_role = auditor_role

    def user_token(self, user: str, client_id: str) -> str:
        return self._idp.user_token(audience=DEV_AUDIENCE, client_app_id=client_id, username=user)

    def auditor_token(self) -> str:
        return self._idp.app_token(
            audience=DEV_AUDIENCE, client_app_id=DEV_CLIENT_ID, roles=[self._auditor_role]
        )


def _livekit_plan(base: Settings, livekit_port: int) -> LiveKitPlan | None:
    """The livekit-server to run, or None (saying why in one line) when there is none,
    or when LKPS_LIVEKIT_URL names a LiveKit of the developer's own."""
    if base.livekit_url:
        typer.echo(f"lkps dev: LiveKit is LKPS_LIVEKIT_URL={base.livekit_url}; not starting one")
        return None
    try:
        binary = find_binary(base.livekit_server_bin, cwd=Path.cwd(), path=os.environ.get("PATH"))
    except LiveKitUnavailable as exc:
        typer.secho(f"lkps dev: {exc}", err=True, fg=typer.colors.YELLOW)
        return None
    return LiveKitPlan.choose(binary, livekit_port)


@app.command("token")
def token(
    user: str | None = typer.Option(None, help="A signed-in user (delegated token)"),
    app_id: str | None = typer.Option(None, "--app", help="A client app (app-only token)"),
    agent: str | None = typer.Option(None, help="An agent (app-only token)"),
    client_id: str = typer.Option(DEV_CLIENT_ID, help="For --user: the client app signed in to"),
    role: list[str] = typer.Option([], "--role", help="App role to include (repeatable)"),
    v1: bool = typer.Option(False, "--v1", help="Issue a v1.0 token instead of v2.0"),
    ttl: int = typer.Option(3600, help="Lifetime in seconds"),
    state_dir: Path = STATE_DIR_OPTION,
) -> None:
    """Print an access token that `lkps dev` accepts."""
    chosen = [option for option in (user, app_id, agent) if option]
    if len(chosen) != 1:
        fail("give exactly one of --user, --app or --agent")
    if not load_settings().is_dev:
        fail("`lkps dev token` only runs with LKPS_ENV=dev")
    idp = identity_provider(state_dir)
    version = "1.0" if v1 else "2.0"
    if user:
        jwt = idp.user_token(
            audience=DEV_AUDIENCE,
            client_app_id=client_id,
            username=user,
            version=version,
            roles=role,
            lifetime=ttl,
        )
    else:
        jwt = idp.app_token(
            audience=DEV_AUDIENCE,
            client_app_id=str(app_id or agent),
            version=version,
            roles=role,
            lifetime=ttl,
        )
    typer.echo(jwt)


@app.command("register")
def register(
    agent: str = typer.Option(DEV_AGENT_ID, help="The agent's app id"),
    url: str = typer.Option(DEV_URL, "--url", help="The dev instance"),
    state_dir: Path = STATE_DIR_OPTION,
) -> None:
    """Register an agent as the agent SDK would, and keep it registered (heartbeats at
    the interval LKPS asks for) until Ctrl-C or SIGTERM, which deregister the agent.

    For trying session starts by hand without running an agent: a registration made
    with curl lapses after the presence TTL (90 s) without heartbeats."""
    import httpx

    if not load_settings().is_dev:
        fail("`lkps dev register` only runs with LKPS_ENV=dev")
    idp = identity_provider(state_dir)

    def post(path: str, body: dict[str, str]) -> httpx.Response:
        # A fresh app-only token for each call: the registration may outlive one.
        token = idp.app_token(audience=DEV_AUDIENCE, client_app_id=agent)
        return httpx.post(
            f"{url.rstrip('/')}{path}",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )

    try:
        registered = post("/api/agent/register", {})
    except httpx.TransportError as exc:
        fail(f"cannot reach LKPS at {url} (is `lkps dev` running there?): {exc}", code=1)
    if registered.status_code != 200:
        fail(f"register: HTTP {registered.status_code} {registered.text}", code=1)
    answer = registered.json()
    registration = {"registration_id": answer["registration_id"]}
    interval = answer["heartbeat_interval_seconds"]
    typer.echo(
        f"registered agent {answer['agent_name']} (registration {answer['registration_id']}); "
        f"a heartbeat every {interval} s keeps it present "
        f"(it lapses {answer['presence_ttl_seconds']} s after the last). Ctrl-C deregisters."
    )
    signal.signal(signal.SIGTERM, _interrupt)  # `kill %1` stops it as Ctrl-C does
    try:
        while True:
            time.sleep(interval)
            try:
                status = post("/api/agent/heartbeat", registration).status_code
            except httpx.TransportError as exc:
                typer.echo(f"heartbeat: cannot reach LKPS ({exc}); trying again", err=True)
                continue
            if status == 404:
                fail("the registration is gone (deregistered, or it lapsed): stopped", code=1)
            if status != 200:
                typer.echo(f"heartbeat: HTTP {status}; trying again", err=True)
    except KeyboardInterrupt:
        # Every registration of the agent, a curl-made one too: it has gone away.
        try:
            post("/api/agent/deregister", {})
        except httpx.TransportError as exc:
            fail(f"deregister: cannot reach LKPS ({exc}); the registration lapses by itself", 1)
        typer.echo(f"deregistered agent {answer['agent_name']}")


@app.command("agent")
def agent(
    agent: str = typer.Option(DEV_AGENT_ID, "--agent", help="The agent's app id"),
    url: str = typer.Option(DEV_URL, "--url", help="The dev instance"),
    wait: float = typer.Option(
        30.0, "--wait", min=0, help="Seconds to wait for the dev instance to answer"
    ),
) -> None:
    """Run the example agent (examples/agent/agent.py, the agent guide's) against a
    running `lkps dev`, as agent AGENT: the dev identity provider issues its app token
    for the public dev secret. An agent other than the dev allow-list's registers with
    client authorization off, so that the dev client (and the playground) may start
    sessions with it. Ctrl-C stops it (it deregisters)."""
    import httpx

    if not load_settings().is_dev:
        fail("`lkps dev agent` only runs with LKPS_ENV=dev")
    try:
        agent_id = str(uuid.UUID(agent))
    except ValueError:
        fail(f"--agent {agent!r} is not an app id (a UUID)")
    script = example_agent()
    base = url.rstrip("/")
    # Started together with `lkps dev`, it waits for the instance to come up.
    deadline = time.monotonic() + wait
    while True:
        try:
            httpx.get(f"{base}/api/health", timeout=5).raise_for_status()
            break
        except httpx.HTTPError as exc:
            if time.monotonic() >= deadline:
                fail(f"cannot reach LKPS at {base} (is `lkps dev` running there?): {exc}", 1)
            time.sleep(0.5)
    environment = dict(os.environ)
    environment.update(LKPS_ENVIRONMENT="dev", LKPS_URL=base, LKPS_AUTH="dev")
    environment.update(AZURE_CLIENT_ID=agent_id, AZURE_CLIENT_SECRET=DEV_APP_SECRET)
    if agent_id != DEV_AGENT_ID:
        environment.setdefault("LKPS_ENFORCE_CLIENT_AUTHZ", "false")
    # livekit-agents' health endpoint would take port 8081; any free one serves here.
    environment.setdefault("AGENT_HTTP_PORT", "0")
    typer.echo(f"lkps dev agent: {script} as agent {agent_id} against {base}", err=True)
    sys.stdout.flush()
    # The agent takes this process over: Ctrl-C and SIGTERM reach it directly.
    os.execve(sys.executable, [sys.executable, str(script), "start"], environment)  # noqa: S606


def example_agent() -> Path:
    """examples/agent/agent.py: in the folder `lkps dev agent` runs in (the checkout), or
    in the checkout this lkps is installed from (uv's editable install)."""
    import lkps

    relative = Path("examples", "agent", "agent.py")
    for root in (Path.cwd(), Path(lkps.__file__).resolve().parents[4]):
        if (root / relative).is_file():
            return root / relative
    fail(f"no {relative} here: run `lkps dev agent` in the LKPS checkout")


def _interrupt(_signal: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@app.command("decode")
def decode(token: str = typer.Argument(..., help="A LiveKit token from this dev instance")) -> None:
    """Check a LiveKit token with the dev API secret and print its claims."""
    import json

    import jwt

    settings = load_settings()
    secret = settings.livekit_api_secret.get_secret_value() or DEV_LIVEKIT_SECRET
    warnings.filterwarnings("ignore", message="The HMAC key is")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            issuer=settings.livekit_api_key or DEV_LIVEKIT_KEY,
            options={"require": ["exp"]},
        )
    except jwt.PyJWTError as exc:
        fail(f"not a valid token of this dev instance: {exc}")
    typer.echo(json.dumps(claims, indent=2, ensure_ascii=False))


def _livekit_line(livekit: LiveKitProcess | None) -> str:
    if livekit is None:
        return " (not started by lkps dev: agents and the playground need it running)"
    plan = livekit.plan
    return (
        f"\n                 livekit-server {plan.binary} (pid {livekit.pid}; ICE UDP "
        f'127.0.0.1:{plan.udp_port}; webhooks to LKPS; lines "{PREFIX.strip()}", '
        f'LKPS\'s "{LKPS_PREFIX.strip()}")'
    )


def _agents_line(settings: Settings) -> str:
    """How agents' workers connect, and so what keeps an agent present (the tour's
    `lkps dev register` only counts in direct mode)."""
    if settings.agent_connection == "gateway":
        return "gateway (workers connect through LKPS's /agent; present while one is connected)"
    return (
        f"direct (present {settings.presence_ttl} s after a register or heartbeat; "
        "LKPS_AGENT_CONNECTION=gateway: through LKPS)"
    )


# How the README and the banner spell a command: what works after `pip install uv` alone.
RUN = "python3 -m uv run"


def _banner(settings: Settings, state_dir: Path, livekit: LiveKitProcess | None = None) -> str:
    """What `lkps dev` prints: where it serves, and commands that work as printed
    against this instance (its port, its state folder) from the folder it runs in."""
    from lkps.api.playground import PLAYGROUND_PATH

    base = f"http://{settings.host}:{settings.port}"
    state = "" if state_dir == STATE_DIR_OPTION.default else f" --state-dir {state_dir}"
    at = "" if base == DEV_URL else f" --url {base}"
    return f"""
LKPS dev instance (LKPS_ENV=dev; development identity provider)
  playground     {base}{PLAYGROUND_PATH}   (sign in, start a session, talk to the agent)
  API            {base}/api        docs: {base}/api/docs
  health         {base}/api/health/ready
  dev JWKS       {settings.jwks_url}
  browser CORS   {", ".join(settings.cors_allow_origins)}
  LiveKit        {settings.livekit_url} (API key {settings.livekit_api_key}){_livekit_line(livekit)}
  agents         {_agents_line(settings)}
  database       {settings.database_url}
  allow-list     {settings.authz_file}  (client {DEV_CLIENT_ID} -> agent {DEV_AGENT_ID})
  token endpoint {base}{DEV_JWKS_PATH}/{DEV_TENANT_ID}/oauth2/v2.0/token
                 (client credentials for either app id above, secret "{DEV_APP_SECRET}")
  example agent  {RUN} lkps dev agent{at}   (examples/agent/agent.py, as agent {DEV_AGENT_ID})

Try it (another terminal, same folder):
  AGENT_TOKEN=$({RUN} lkps dev token --agent {DEV_AGENT_ID}{state})
  curl -s -X POST {base}/api/agent/register -H "Authorization: Bearer $AGENT_TOKEN"
  USER_TOKEN=$({RUN} lkps dev token --user alice{state})
  curl -s -X POST {base}/api/session/start -H "Authorization: Bearer $USER_TOKEN" \\
       -H 'Content-Type: application/json' -d '{{"agent_entra_app_id": "{DEV_AGENT_ID}"}}'
{_keep_present(settings, f"{RUN} lkps dev register --agent {DEV_AGENT_ID} --url {base}{state}")}
"""


def _keep_present(settings: Settings, register: str) -> str:
    """The banner's last lines: what keeps the tour's agent present in this mode."""
    if settings.agent_connection == "gateway":
        return (
            "Through the gateway, only a connected worker makes an agent present: run the\n"
            "example agent (above) before starting a session."
        )
    return f"""A registration lapses {settings.presence_ttl} s after the last register or heartbeat; to keep
the agent present without running one (heartbeats until Ctrl-C):
  {register}"""
