"""`LkpsAgentServer`: livekit-agents' `AgentServer`, on an Entra identity instead of a
LiveKit API key and secret.

    server = LkpsAgentServer()            # was: AgentServer()

    @server.rtc_session()                 # the agent name is the agent's Entra app id
    async def entrypoint(ctx: JobContext) -> None: ...

    if __name__ == "__main__":
        cli.run_app(server)               # unchanged

Before the worker connects, the server registers with LKPS (Entra app-only token →
`POST /api/agent/register`), takes the LiveKit URL and worker token LKPS returns, and
keeps the registration alive (`AgentLifecycle`). A graceful shutdown (SIGTERM, Ctrl+C)
deregisters first, so clients get 404 at once while running jobs finish.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httpx
from livekit.agents import AgentServer
from livekit.agents.types import NOT_GIVEN, NotGivenOr

from lkps_agent._config import AgentConfig, ConfigurationError
from lkps_agent._credentials import build_credential
from lkps_agent._errors import LkpsAgentError
from lkps_agent._lifecycle import AgentLifecycle
from lkps_agent._livekit_seam import SeamedAgentServer, check_supported, placeholder_credentials
from lkps_agent._status import AgentState, AgentStatus
from lkps_client import AsyncLkpsClient, AsyncTokenCredential

__all__ = ["LkpsAgentServer"]

logger = logging.getLogger("lkps_agent")

_STATIC_CREDENTIAL_OPTIONS = ("api_key", "api_secret", "ws_url")


class LkpsAgentServer(SeamedAgentServer):
    """An `AgentServer` whose LiveKit URL and worker token come from LKPS.

    `config` defaults to `AgentConfig.from_environment()` (`environment=` picks np, prod
    or dev); `credential` replaces the one `config.auth` would build (any
    `azure.identity.aio` credential; it stays yours to close). Every other keyword is
    `AgentServer`'s, except `api_key`, `api_secret` and `ws_url`: LKPS provides those.

    `load_fnc` is the load the worker reports, exactly as `AgentServer` takes it (a
    callable with or without the server as its argument); None keeps livekit-agents'
    default, the whole machine's CPU use. On a shared host pass `job_count_load(max_jobs)`:
    livekit-server offers jobs only below its `agents.target_load` (0.7) and LKPS answers
    503 at `LKPS_LIVEKIT_AGENT_TARGET_LOAD`, whatever the worker's own `load_threshold`.
    """

    def __init__(
        self,
        *,
        config: AgentConfig | None = None,
        credential: AsyncTokenCredential | None = None,
        environment: str | None = None,
        load_fnc: Callable[[AgentServer], float] | Callable[[], float] | None = None,
        **agent_server_options: Any,
    ) -> None:
        check_supported()
        static = [name for name in _STATIC_CREDENTIAL_OPTIONS if name in agent_server_options]
        if static:
            raise ConfigurationError(
                f"LkpsAgentServer takes no {', '.join(static)}: LKPS issues the worker token "
                "and names the LiveKit URL"
            )
        if config is not None and environment is not None:
            raise ConfigurationError("pass config= or environment=, not both")
        self._lkps_config = config or AgentConfig.from_environment(environment=environment)
        self._lkps_credential = credential
        self._lkps_lifecycle: AgentLifecycle | None = None
        self._lkps_client: AsyncLkpsClient | None = None
        self._lkps_http: httpx.AsyncClient | None = None
        self._lkps_owned_credential: Any = None
        self._lkps_closing: asyncio.Task[None] | None = None
        self._lkps_failure: BaseException | None = None
        api_key, api_secret = placeholder_credentials()
        super().__init__(
            api_key=api_key, api_secret=api_secret, load_fnc=load_fnc, **agent_server_options
        )

    @property
    def lkps_config(self) -> AgentConfig:
        return self._lkps_config

    @property
    def lkps_status(self) -> AgentStatus:
        """Where the registration stands: for the agent's health checks and logs."""
        if self._lkps_lifecycle is not None:
            return self._lkps_lifecycle.status()
        return AgentStatus(
            state=AgentState.STARTING,
            agent_name=None,
            registration_id=None,
            livekit_url=None,
            token_expires_at=None,
            presence_expires_at=None,
            last_contact_at=None,
            consecutive_failures=0,
            last_error=None,
            worker_connections=0,
            worker_connected=False,
        )

    @property
    def lkps_failure(self) -> BaseException | None:
        """Why the last `run()` failed, if it did: livekit-agents' CLI only logs the error
        ("worker failed"), so `lkps_agent.run_app` reads it here to exit non-zero."""
        return self._lkps_failure

    async def run(self, *, devmode: bool = False, unregistered: bool = False) -> None:
        """Register with LKPS (retrying while LKPS or Entra are unreachable), then run the
        worker. Raises `LkpsAgentError` when the agent cannot run (LKPS refused it, or
        LiveKit refused LKPS's token), or the worker's own error (its HTTP port in use,
        for one); `unregistered=True` (console mode) skips LKPS."""
        try:
            await self._run(devmode=devmode, unregistered=unregistered)
        except Exception as exc:
            self._lkps_failure = exc
            raise

    async def _run(self, *, devmode: bool, unregistered: bool) -> None:
        if unregistered:
            await super().run(devmode=devmode, unregistered=True)
            return
        lifecycle = self._start_lifecycle()
        try:
            registration = await lifecycle.start()
            requested = self._requested_agent_name
            if requested and requested != registration.agent_name:
                raise ConfigurationError(
                    f"the agent name {requested!r} (rtc_session or LIVEKIT_AGENT_NAME) is not "
                    f"this agent's app id {registration.agent_name}: LKPS dispatches by app id, "
                    "so leave agent_name out"
                )
            self._use_agent_name(registration.agent_name)
            self.update_options(ws_url=registration.livekit_url)
            await super().run(devmode=devmode, unregistered=False)
        finally:
            await self._stop_lifecycle()
        if lifecycle.fatal_error is not None:
            raise lifecycle.fatal_error

    async def drain(self, timeout: NotGivenOr[int | None] = NOT_GIVEN) -> None:  # noqa: ASYNC109 (the base signature)
        # Deregister before waiting for running jobs: new sessions get 404 at once
        # rather than a dispatch to a worker on its way out.
        if self._lkps_lifecycle is not None:
            await self._lkps_lifecycle.stop(deregister=True)
        await super().drain(timeout)

    async def aclose(self) -> None:
        await self._stop_lifecycle()
        await super().aclose()

    # Internals.

    def _start_lifecycle(self) -> AgentLifecycle:
        config = self._lkps_config
        credential = self._lkps_credential
        if credential is None:
            credential = self._lkps_owned_credential = build_credential(config)
        self._lkps_http = httpx.AsyncClient(verify=config.ca_bundle or True)
        self._lkps_client = AsyncLkpsClient(
            config.lkps_url,
            credential=credential,
            scope=config.scope,
            timeout=config.request_timeout,
            http_client=self._lkps_http,
        )
        lifecycle = AgentLifecycle(self._lkps_client, config, on_fatal=self._on_fatal)
        self._lkps_lifecycle = lifecycle
        self._use_tokens(lifecycle)
        # LiveKit's answer to the worker's register message: from now on it can dispatch.
        self.on("worker_registered", lambda *_: lifecycle.worker_connected(True))
        return lifecycle

    async def _stop_lifecycle(self) -> None:
        lifecycle, http = self._lkps_lifecycle, self._lkps_http
        if lifecycle is not None:
            await lifecycle.stop(deregister=True)
        if http is not None:
            self._lkps_http = self._lkps_client = None
            await http.aclose()
        credential, self._lkps_owned_credential = self._lkps_owned_credential, None
        if credential is not None:
            await credential.close()

    def _on_fatal(self, error: LkpsAgentError) -> None:
        # Called from inside the worker's own tasks: close from a task of our own. Before
        # the worker runs, `run()` raises the error itself.
        if self._lkps_closing is None and not self._closed:
            self._lkps_closing = asyncio.get_running_loop().create_task(
                self.aclose(), name="lkps-agent-fatal-close"
            )
