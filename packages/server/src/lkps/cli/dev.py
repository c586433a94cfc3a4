"""`lkps dev`: LKPS on a laptop, with its own development identity provider.

The identity provider comes from `lkps-testkit` (never in a production install); its
RSA key lives in the state folder so that `lkps dev token` in another terminal signs
tokens the running instance accepts. Dev tokens name the development tenant, which
every non-dev configuration refuses (`Settings.check_servable`).
"""

from __future__ import annotations

import signal
import time
import warnings
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import typer

from lkps.cli.common import fail, load_settings, uvicorn_options
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
    )


def dev_settings(base: Settings, *, host: str, port: int, state_dir: Path) -> Settings:
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
        "livekit_url": base.livekit_url or DEV_LIVEKIT_URL,
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
) -> None:
    """Start LKPS with SQLite and the development identity provider."""
    if ctx.invoked_subcommand is not None:
        return
    import httpx
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from lkps.app import create_app

    settings = dev_settings(load_settings(), host=host, port=port, state_dir=state_dir)
    try:
        settings.cors_origins()
    except ConfigurationError as exc:
        fail(f"cannot serve: {exc}")
    idp = identity_provider(state_dir)
    idp_app = Starlette(routes=[Mount(DEV_JWKS_PATH, idp.asgi_app())])
    configure_logging(settings.log_level)
    # `livekit-server --dev` signs with a 6-byte secret; PyJWT warns about it on each token.
    warnings.filterwarnings("ignore", message="The HMAC key is")
    application = create_app(
        settings,
        jwks_transport=httpx.ASGITransport(app=idp_app),
        mounts={DEV_JWKS_PATH: idp.asgi_app()},
    )
    # Flushed: read from a file or pipe (`lkps dev > dev.log`) before the first request.
    print(_banner(settings, state_dir), flush=True)
    uvicorn.run(application, **uvicorn_options(settings))


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


# How the README and the banner spell a command: what works after `pip install uv` alone.
RUN = "python3 -m uv run"


def _banner(settings: Settings, state_dir: Path) -> str:
    """What `lkps dev` prints: where it serves, and commands that work as printed
    against this instance (its port, its state folder) from the folder it runs in."""
    base = f"http://{settings.host}:{settings.port}"
    state = "" if state_dir == STATE_DIR_OPTION.default else f" --state-dir {state_dir}"
    agent_env = "LKPS_ENVIRONMENT=dev" + ("" if base == DEV_URL else f" LKPS_URL={base}")
    return f"""
LKPS dev instance (LKPS_ENV=dev; development identity provider)
  API            {base}/api        docs: {base}/api/docs
  health         {base}/api/health/ready
  dev JWKS       {settings.jwks_url}
  browser CORS   {", ".join(settings.cors_allow_origins)}
  LiveKit        {settings.livekit_url} (API key {settings.livekit_api_key})
  database       {settings.database_url}
  allow-list     {settings.authz_file}  (client {DEV_CLIENT_ID} -> agent {DEV_AGENT_ID})
  token endpoint {base}{DEV_JWKS_PATH}/{DEV_TENANT_ID}/oauth2/v2.0/token
                 (client credentials for either app id above, secret "{DEV_APP_SECRET}")
  example agent  {agent_env} {RUN} python examples/agent/agent.py start

Try it (another terminal, same folder):
  AGENT_TOKEN=$({RUN} lkps dev token --agent {DEV_AGENT_ID}{state})
  curl -s -X POST {base}/api/agent/register -H "Authorization: Bearer $AGENT_TOKEN"
  USER_TOKEN=$({RUN} lkps dev token --user alice{state})
  curl -s -X POST {base}/api/session/start -H "Authorization: Bearer $USER_TOKEN" \\
       -H 'Content-Type: application/json' -d '{{"agent_entra_app_id": "{DEV_AGENT_ID}"}}'
A registration lapses {settings.presence_ttl} s after the last register or heartbeat; to keep
the agent present without running one (heartbeats until Ctrl-C):
  {RUN} lkps dev register --agent {DEV_AGENT_ID} --url {base}{state}
"""
