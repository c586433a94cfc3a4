"""Every contact lkps-agent has with livekit-agents' internals, and nothing else.

livekit-agents has no public hook for a worker token issued by someone else: on every
(re)connect, `AgentServer._connection_task` signs its own token from an API key and
secret and sends it as `Authorization: Bearer …` through `self._http_session.ws_connect`
to `<ws_url>/agent`. So this module

- wraps the worker's aiohttp session (assigned in `AgentServer.run`) in a proxy whose
  `ws_connect` to `/agent` carries the LKPS-issued token instead, asking the token source
  on every (re)connect, and reports LiveKit's 401 instead of letting it become a silent
  retry. When the registration names an agent gateway, that socket dials
  `<gateway URL>/agent` instead of LiveKit's, while the worker's `ws_url` stays LiveKit's:
  livekit-agents joins a job's room at `job_assign.url or ws_url`, so rooms are joined at
  LiveKit even if a server leaves the assignment's URL empty;
- gives `AgentServer` placeholder credentials, because `run()` refuses to start without
  them; they sign nothing LiveKit accepts;
- turns dev-mode job reloading (which re-signs job tokens with the API secret) into a
  logged no-op.

`check_supported()` verifies, before anything starts, that the installed release still
has these internals; `tests/agent/test_livekit_seam.py` runs a real worker through the
seam so that an upgrade which breaks it fails loudly in CI.
"""

from __future__ import annotations

import inspect
import logging
import secrets
from typing import Any, Protocol
from urllib.parse import urlparse

import aiohttp
from livekit.agents import AgentServer
from livekit.agents import __version__ as livekit_agents_version

from lkps_agent._errors import UnsupportedLiveKitAgentsError

__all__ = [
    "SUPPORTED_RANGE",
    "SeamedAgentServer",
    "WorkerTokenSource",
    "check_supported",
    "placeholder_credentials",
]

logger = logging.getLogger("lkps_agent")

# Keep in step with packages/agent/pyproject.toml.
SUPPORTED_RANGE = ((1, 8, 9), (1, 9, 0))
PLACEHOLDER_API_KEY = "lkps-agent-has-no-api-key"

# What `check_supported` expects to find in the worker's source.
_CONNECT_MARKERS = ("self._http_session.ws_connect", '"Authorization"', '"agent"')
_SESSION_MARKER = "self._http_session = aiohttp.ClientSession("


class WorkerTokenSource(Protocol):
    """Where the worker socket's token comes from (`AgentLifecycle`)."""

    async def worker_token(self) -> str: ...

    def gateway_url(self) -> str | None:
        """The agent gateway the token is for (its `/agent` replaces LiveKit's), or
        None: the token is for LiveKit itself."""
        ...

    async def livekit_rejected(self, token: str) -> None: ...

    def livekit_accepted(self) -> None: ...

    def worker_connected(self, connected: bool) -> None: ...


def check_supported() -> None:
    """Raise `UnsupportedLiveKitAgentsError` unless the installed livekit-agents is in the
    tested range and still has the internals this module relies on."""
    version = _parse_version(livekit_agents_version)
    low, high = SUPPORTED_RANGE
    if not (low <= version < high):
        raise UnsupportedLiveKitAgentsError(
            f"lkps-agent supports livekit-agents >={_dotted(low)},<{_dotted(high)}; "
            f"{livekit_agents_version} is installed"
        )
    problems = []
    try:
        connect_source = inspect.getsource(AgentServer._connection_task)
        run_source = inspect.getsource(AgentServer.run)
    except (AttributeError, OSError, TypeError) as exc:
        problems.append(f"cannot read AgentServer's source ({exc})")
    else:
        problems += [
            f"_connection_task no longer contains {marker}"
            for marker in _CONNECT_MARKERS
            if marker not in connect_source
        ]
        if _SESSION_MARKER not in run_source:
            problems.append("run() no longer creates self._http_session")
    problems += [
        f"AgentServer.{name} is gone"
        for name in ("_reload_jobs", "update_options", "drain", "aclose")
        if not hasattr(AgentServer, name)
    ]
    if problems:
        raise UnsupportedLiveKitAgentsError(
            f"livekit-agents {livekit_agents_version} changed the worker internals lkps-agent "
            f"injects the LKPS token through: {'; '.join(problems)}"
        )


def placeholder_credentials() -> tuple[str, str]:
    """A key and a random secret for `AgentServer.__init__`: its `run()` refuses to start
    without them. LiveKit knows neither, so anything signed with them (`ctx.api` in a
    job, for one) is refused with a 401 instead of working with a static credential."""
    return PLACEHOLDER_API_KEY, secrets.token_urlsafe(32)


class _WorkerSocketAuth:
    """The worker's aiohttp session, except that the `/agent` socket carries the LKPS
    token. Everything else is passed through untouched."""

    def __init__(self, session: aiohttp.ClientSession, tokens: WorkerTokenSource) -> None:
        self._session = session
        self._tokens = tokens
        self._opened = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    async def ws_connect(self, url: Any, *args: Any, **kwargs: Any) -> Any:
        if not urlparse(str(url)).path.rstrip("/").endswith("/agent"):
            return await self._session.ws_connect(url, *args, **kwargs)
        if self._opened:
            # The worker only reconnects after its previous socket ended.
            self._opened = False
            self._tokens.worker_connected(False)
        token = await self._tokens.worker_token()
        gateway = self._tokens.gateway_url()
        if gateway:
            url = agent_socket_url(gateway)
        kwargs["headers"] = {
            **dict(kwargs.get("headers") or {}),
            "Authorization": f"Bearer {token}",
        }
        try:
            socket = await self._session.ws_connect(url, *args, **kwargs)
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 401:
                await self._tokens.livekit_rejected(token)
            raise
        self._opened = True
        self._tokens.livekit_accepted()
        return socket


def agent_socket_url(base: str) -> str:
    """`<base>/agent` as livekit-agents builds it from `ws_url` (http(s) becomes ws(s))."""
    if base.startswith("http"):
        base = "ws" + base.removeprefix("http")
    return base.rstrip("/") + "/agent"


class SeamedAgentServer(AgentServer):
    """`AgentServer` with its worker socket authenticated by a `WorkerTokenSource`."""

    _lkps_tokens: WorkerTokenSource | None = None

    @property
    def _http_session(self) -> Any:
        return self.__dict__.get("_lkps_http_session")

    @_http_session.setter
    def _http_session(self, session: aiohttp.ClientSession | None) -> None:
        if session is not None and self._lkps_tokens is not None:
            session = _WorkerSocketAuth(session, self._lkps_tokens)  # type: ignore[assignment]
        self.__dict__["_lkps_http_session"] = session

    def _use_tokens(self, tokens: WorkerTokenSource) -> None:
        self._lkps_tokens = tokens

    @property
    def _requested_agent_name(self) -> str:
        """The name `rtc_session(agent_name=…)` or LIVEKIT_AGENT_NAME set, if any."""
        return str(getattr(self, "_agent_name", "") or "")

    def _use_agent_name(self, name: str) -> None:
        self._agent_name = name

    async def _reload_jobs(self, jobs: list[Any]) -> None:
        # The base re-signs each running job's token with the API secret, which an LKPS
        # agent does not have; the jobs end with the old process instead.
        if jobs:
            logger.warning(
                "dev reload: %d running job(s) are not carried over (that needs the LiveKit "
                "API secret); they end with the previous process",
                len(jobs),
            )


def _parse_version(text: str) -> tuple[int, int, int]:
    """ "1.8.9" → (1, 8, 9); a pre-release suffix ("1.9.0rc1") keeps its numeric part."""
    numbers = [int("".join(ch for ch in part if ch.isdigit()) or 0) for part in text.split(".")]
    major, minor, patch = (*numbers, 0, 0, 0)[:3]
    return major, minor, patch


def _dotted(version: tuple[int, int, int]) -> str:
    return ".".join(map(str, version))
