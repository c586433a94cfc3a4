"""An agent worker's life with LKPS: register, heartbeat, renew the LiveKit token before it
expires, deregister on the way out.

Nothing here touches livekit-agents: the worker asks `worker_token()` for a token on every
(re)connect of its socket and reports a 401 from LiveKit with `livekit_rejected()`; the
rest runs in one background task. Failures LKPS or Entra may recover from are retried
with capped exponential backoff and jitter (honouring `Retry-After`), shown in the status
and the log, and never raised into the worker; failures retrying cannot heal end the
agent through `on_fatal` with an error that says what to fix.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from lkps_agent._config import AgentConfig
from lkps_agent._errors import LiveKitRejectedTokenError, LkpsAgentError, RegistrationRefusedError
from lkps_agent._status import AgentState, AgentStatus
from lkps_client import (
    AgentRegistration,
    AsyncLkpsClient,
    AuthenticationError,
    BadRequestError,
    LkpsError,
    NotAuthorizedError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    RegistrationGoneError,
    ServiceUnavailableError,
)

__all__ = ["AgentLifecycle"]

logger = logging.getLogger("lkps_agent")

T = TypeVar("T")

# The worker token is renewed once this share of its lifetime has passed, so a reconnect
# never starts with a token about to expire, and an LKPS outage shorter than the rest of
# the lifetime goes unnoticed by LiveKit.
RENEW_AFTER_FRACTION = 0.8
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 60.0
# 401s from LKPS in a row before giving up: the first few may be a token the credential
# cached across a key rollover; a steady 401 is a wrong tenant or audience.
MAX_CONSECUTIVE_AUTH_FAILURES = 5
DEREGISTER_TIMEOUT_SECONDS = 5.0
# Entra answers that name a configuration mistake (no retry fixes them): invalid or
# expired client secret, unknown application, unknown tenant, invalid certificate
# assertion, unknown resource (a wrong LKPS scope).
PERMANENT_ENTRA_ERRORS = (
    "AADSTS7000215",
    "AADSTS7000222",
    "AADSTS700016",
    "AADSTS90002",
    "AADSTS700027",
    "AADSTS500011",
)


class AgentLifecycle:
    """One registration of one worker process, kept alive until `stop()`."""

    def __init__(
        self,
        client: AsyncLkpsClient,
        config: AgentConfig,
        *,
        on_fatal: Callable[[LkpsAgentError], None] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._client = client
        self._config = config
        self._on_fatal = on_fatal
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._registration: AgentRegistration | None = None
        self._renew_at = 0.0
        self._next_heartbeat = 0.0
        self._state = AgentState.STARTING
        self._failures = 0
        self._auth_failures = 0
        self._last_error: str | None = None
        self._last_contact: datetime | None = None
        self._presence_expires_at: datetime | None = None
        self._worker_connections = 0
        # Whether the worker is registered with LiveKit now. LKPS counts the agent as
        # present only while it is: a session started before the worker connects (or
        # while it reconnects) would be dispatched to nobody, and LiveKit drops such
        # jobs without a word.
        self._worker_connected = False
        self._wake = asyncio.Event()
        # The token issued in answer to LiveKit's last 401: if LiveKit refuses that one
        # too, renewing cannot help.
        self._token_after_rejection: str | None = None
        self._fatal: LkpsAgentError | None = None
        self._stopped = False

    # What the worker sees.

    @property
    def registration(self) -> AgentRegistration | None:
        return self._registration

    @property
    def fatal_error(self) -> LkpsAgentError | None:
        return self._fatal

    def status(self) -> AgentStatus:
        registration = self._registration
        return AgentStatus(
            state=self._state,
            agent_name=registration.agent_name if registration else None,
            registration_id=registration.registration_id if registration else None,
            livekit_url=registration.livekit_url if registration else None,
            token_expires_at=registration.expires_at if registration else None,
            presence_expires_at=self._presence_expires_at,
            last_contact_at=self._last_contact,
            consecutive_failures=self._failures,
            last_error=self._last_error,
            worker_connections=self._worker_connections,
            worker_connected=self._worker_connected,
        )

    async def start(self) -> AgentRegistration:
        """Register (retrying until LKPS and Entra answer), then keep the registration
        alive in the background. Raises only what retrying cannot heal."""
        registration = await self._retrying("register", self._register)
        self._task = asyncio.create_task(self._keep_alive(), name="lkps-agent-keepalive")
        return registration

    async def worker_token(self) -> str:
        """The LiveKit token for the next (re)connect of the worker socket, renewed first
        when it is due. While LKPS is unreachable the current token is used as long as it
        lasts; LiveKit then decides. After `stop()` (a drain) nothing is renewed: the
        agent must not register again on its way out."""
        if self._renew_due() and not self._stopped:
            try:
                await self._renew()
            except LkpsAgentError:
                raise
            except Exception as exc:
                self._note_failure("renew before reconnect", exc)
        registration = self._current()
        self._worker_connections += 1
        return registration.token

    def gateway_url(self) -> str | None:
        """The agent gateway of the current registration (LKPS in gateway mode): the
        worker socket goes there, with the gateway credential, instead of to LiveKit."""
        registration = self._registration
        return registration.gateway_url if registration is not None else None

    async def livekit_rejected(self, token: str) -> None:
        """LiveKit (or LKPS's agent gateway) answered 401 to the worker socket opened
        with `token`."""
        if self._stopped:
            return
        if token == self._token_after_rejection:
            self._fail(
                LiveKitRejectedTokenError(
                    "LiveKit rejected the worker token LKPS issued moments ago (HTTP 401 on "
                    f"{self._worker_url()}/agent): LKPS and this LiveKit server do not share "
                    "an API key and secret, or LKPS hands out the wrong URL. Ask the "
                    "LKPS operators; retrying will not help."
                )
            )
            return
        logger.error(
            "LiveKit rejected the worker token (HTTP 401); asking LKPS for a new one",
            extra={"worker_url": self._worker_url()},
        )
        try:
            await self._renew(force=True)
        except LkpsAgentError:
            raise
        except Exception as exc:
            self._note_failure("renew after LiveKit's 401", exc)
            return
        self._token_after_rejection = self._current().token

    def livekit_accepted(self) -> None:
        """The worker socket opened: LiveKit took the token."""
        self._token_after_rejection = None

    def worker_connected(self, connected: bool) -> None:
        """The worker registered with LiveKit (True) or lost its connection (False):
        tell LKPS at once, so session starts reach the agent exactly while LiveKit can
        dispatch to it."""
        if connected == self._worker_connected:
            return
        self._worker_connected = connected
        logger.info(
            "worker connected to LiveKit" if connected else "worker lost its LiveKit connection"
        )
        self._next_heartbeat = self._clock()
        self._wake.set()

    async def stop(self, *, deregister: bool = True) -> None:
        """Stop the background task and end the registration, so session starts get 404
        at once instead of after the presence TTL. Best effort: LKPS being down must not
        hold up a shutdown. Once deregistered, nothing registers again (a draining
        worker still reconnects with its last token). `deregister=False` only pauses the
        background task."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._stopped or not deregister:
            return  # drain, aclose and run() all stop it: once is enough
        self._stopped = True
        registration = self._registration
        if registration is not None:
            try:
                await asyncio.wait_for(
                    self._client.deregister_agent(registration.registration_id),
                    DEREGISTER_TIMEOUT_SECONDS,
                )
                logger.info(
                    "deregistered from LKPS",
                    extra={"registration_id": registration.registration_id},
                )
            except Exception as exc:
                logger.warning(
                    "could not deregister from LKPS; it drops the registration after the "
                    "presence TTL",
                    extra={"error": _describe(exc)},
                )
        if self._state is not AgentState.FAILED:
            self._state = AgentState.STOPPED

    # The background task.

    async def _keep_alive(self) -> None:
        while True:
            now = self._clock()
            wake = min(self._renew_at, self._next_heartbeat)
            if wake > now:
                await self._nap(wake - now)
            try:
                if self._renew_due():
                    await self._renew()
                elif self._clock() >= self._next_heartbeat:
                    await self._heartbeat()
            except LkpsAgentError:
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                try:
                    delay = self._note_failure("keep-alive", exc)
                except LkpsAgentError:
                    return
                self._next_heartbeat = self._clock() + delay
                self._renew_at = max(self._renew_at, self._next_heartbeat)

    async def _nap(self, seconds: float) -> None:
        """Sleep `seconds`, or less when `worker_connected` has news for LKPS."""
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)
            self._wake.clear()

    async def _heartbeat(self) -> None:
        registration = self._current()
        try:
            beat = await self._client.agent_heartbeat(
                registration.registration_id, worker_connected=self._worker_connected
            )
        except RegistrationGoneError:
            # Deregistered elsewhere, or LKPS did not hear from us within the presence
            # TTL (an outage): a new registration, not a crash.
            logger.warning(
                "LKPS no longer knows this registration; registering again",
                extra={"registration_id": registration.registration_id},
            )
            await self._renew(force=True, fresh=True)
            return
        except LkpsError as exc:
            self._raise_if_fatal(exc)
            raise
        self._presence_expires_at = beat.presence_expires_at
        self._contact()
        self._next_heartbeat = self._clock() + registration.heartbeat_interval_seconds

    # Registering.

    async def _register(self, registration_id: str | None = None) -> AgentRegistration:
        config = self._config
        try:
            registration = await self._client.register_agent(
                enforce_client_authz=config.enforce_client_authz,
                version=config.version,
                metadata=config.metadata,
                registration_id=registration_id,
                worker_connected=self._worker_connected,
            )
        except LkpsError as exc:
            self._raise_if_fatal(exc)
            raise
        now = self._clock()
        lifetime = max(registration.expires_at.timestamp() - now, 0.0)
        self._registration = registration
        self._renew_at = now + lifetime * RENEW_AFTER_FRACTION
        self._next_heartbeat = now + registration.heartbeat_interval_seconds
        self._presence_expires_at = datetime.fromtimestamp(
            now + registration.presence_ttl_seconds, UTC
        )
        self._contact()
        logger.info(
            "registered with LKPS" if registration_id is None else "renewed the LKPS registration",
            extra={
                "agent_name": registration.agent_name,
                "registration_id": registration.registration_id,
                "token_expires_at": registration.expires_at.isoformat(),
                "heartbeat_interval_seconds": registration.heartbeat_interval_seconds,
            },
        )
        return registration

    async def _renew(self, *, force: bool = False, fresh: bool = False) -> None:
        async with self._lock:
            if not force and not self._renew_due():
                return  # renewed by the other caller while we waited
            current = self._registration
            await self._register(None if fresh or current is None else current.registration_id)

    def _renew_due(self) -> bool:
        return self._registration is not None and self._clock() >= self._renew_at

    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        while True:
            try:
                return await call()
            except LkpsAgentError:
                raise
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._sleep(self._note_failure(what, exc))

    # Failures.

    def _raise_if_fatal(self, error: LkpsError) -> None:
        """Turn an LKPS answer that retrying cannot change into the agent's end."""
        if isinstance(error, AuthenticationError):
            self._auth_failures += 1
            if self._auth_failures < MAX_CONSECUTIVE_AUTH_FAILURES:
                return
            message = (
                f"LKPS rejected this agent's Entra token {self._auth_failures} times in a row "
                f"({error.message}): check the tenant and that the token's audience is "
                f"{self._config.scope.removesuffix('/.default')}"
            )
        elif isinstance(error, NotAuthorizedError):
            message = (
                f"LKPS refused the registration ({error.message}): agents register with an "
                "app-only token of their own app registration, not a user's token"
            )
        elif isinstance(error, BadRequestError | PayloadTooLargeError):
            message = f"LKPS refused the registration as malformed: {error.message}"
        elif isinstance(error, NotFoundError) and not isinstance(error, RegistrationGoneError):
            message = (
                f"{self._config.lkps_url} has no LKPS agent API (HTTP 404): check LKPS_URL "
                "or LKPS_ENVIRONMENT"
            )
        else:
            return
        raise self._fail(RegistrationRefusedError(message))

    def _fail(self, error: LkpsAgentError) -> LkpsAgentError:
        """End the agent with `error` (the first fatal error wins); the one it ended with."""
        if self._fatal is not None:
            return self._fatal
        self._fatal = error
        self._state = AgentState.FAILED
        self._last_error = str(error)
        logger.error("the agent cannot run: %s", error)
        if self._on_fatal is not None:
            self._on_fatal(error)
        return error

    def _note_failure(self, what: str, error: BaseException) -> float:
        """Record a transient failure; return how long to wait before the next try. An
        Entra refusal that names a configuration mistake is not transient: it ends the
        agent (raises)."""
        permanent = next((code for code in PERMANENT_ENTRA_ERRORS if code in str(error)), None)
        if permanent is not None:
            raise self._fail(
                RegistrationRefusedError(
                    f"Entra ID refused this agent's credential ({permanent}; auth mode "
                    f"{self._config.auth!r}, client {self._config.client_id or 'from the environment'}): "
                    f"{_describe(error)}"
                )
            )
        self._failures += 1
        self._last_error = f"{what}: {_describe(error)}"
        if self._state is not AgentState.FAILED:
            self._state = (
                AgentState.DEGRADED if self._registration is not None else AgentState.STARTING
            )
        delay = self._backoff(error)
        logger.warning(
            "LKPS %s failed; retrying in %.1f s",
            what,
            delay,
            extra={"error": _describe(error), "consecutive_failures": self._failures},
        )
        return delay

    def _backoff(self, error: BaseException) -> float:
        ceiling = min(
            BACKOFF_CAP_SECONDS, BACKOFF_FIRST_SECONDS * 2.0 ** min(self._failures - 1, 16)
        )
        # Half fixed, half random: replicas restarted together do not retry in lockstep.
        delay = ceiling / 2 + self._jitter() * ceiling / 2
        if (
            isinstance(error, ServiceUnavailableError | RateLimitedError)
            and error.retry_after is not None
        ):
            delay = max(delay, error.retry_after)
        return delay

    def _contact(self) -> None:
        self._last_contact = datetime.now(UTC)
        self._failures = 0
        self._auth_failures = 0
        self._last_error = None
        if self._state is not AgentState.FAILED:
            self._state = AgentState.REGISTERED

    def _current(self) -> AgentRegistration:
        if self._registration is None:
            raise RuntimeError("not registered with LKPS yet: call start() first")
        return self._registration

    def _worker_url(self) -> str:
        return self._registration.worker_url if self._registration else "LiveKit"


def _describe(error: BaseException) -> str:
    """A log-safe description: the exception's type and message. LKPS's and azure-identity's
    messages carry no tokens or secrets; tracebacks are left out on purpose (they repeat
    every few seconds during an outage)."""
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text[:300]}"
