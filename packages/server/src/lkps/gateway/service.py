"""The agent gateway as the endpoint sees it: admit a worker (its credential), then
relay its connection. The credential is checked before the WebSocket is accepted, so a
refused worker gets an HTTP 401 as LiveKit would answer, which livekit-agents already
treats as "get a new token" (lkps-agent then registers again)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from lkps.gateway.credentials import GatewayCredentials, InvalidGatewayCredential
from lkps.gateway.observer import ENDED_REGISTRATION, WorkerSession
from lkps.gateway.relay import GatewayRelay, RefusalRecorder
from lkps.gateway.sockets import RelaySocket


class GatewayDenied(Exception):
    """The worker may not connect; `str()` says why (safe to tell it)."""


# Whether the agent's registration named by a credential is still open (not ended).
RegistrationCheck = Callable[[str, str], Awaitable[bool]]


class AgentGateway:
    def __init__(
        self,
        credentials: GatewayCredentials,
        relay: GatewayRelay,
        refusals: RefusalRecorder,
        *,
        public_url: str,
        registration_open: RegistrationCheck | None = None,
    ) -> None:
        self._credentials = credentials
        self._registration_open = registration_open
        self._relay = relay
        self._refusals = refusals
        # Empty: each registration is told the URL it reached LKPS at (ws/wss).
        self.public_url = public_url

    async def admit(self, authorization: str | None, client_ip: str | None) -> WorkerSession:
        """The worker this `Authorization` header proves, or `GatewayDenied` (audited)."""
        scheme, _, token = (authorization or "").partition(" ")
        try:
            if scheme.lower() != "bearer" or not token.strip():
                raise InvalidGatewayCredential("no bearer credential")
            claims = self._credentials.verify(token.strip())
        except InvalidGatewayCredential as exc:
            await self._refusals.refused(
                reason=str(exc),
                agent_id=None,
                registration_id=None,
                client_ip=client_ip,
                status=401,
            )
            raise GatewayDenied(str(exc)) from None
        # A deregistered worker's credential stays signed until it expires; the
        # registration's end is what revokes it. (ServiceUnavailable: the store is down,
        # and the endpoint answers 503.)
        if self._registration_open is not None and not await self._registration_open(
            claims.agent_id, claims.registration_id
        ):
            await self._refusals.refused(
                reason=ENDED_REGISTRATION,
                agent_id=claims.agent_id,
                registration_id=claims.registration_id,
                client_ip=client_ip,
                status=401,
            )
            raise GatewayDenied(ENDED_REGISTRATION)
        return WorkerSession(claims.agent_id, claims.registration_id, client_ip)

    async def serve(self, worker: RelaySocket, session: WorkerSession) -> None:
        await self._relay.serve(worker, session)


def gateway_url_for(scheme: str, host: str) -> str:
    """The gateway's URL as a worker reaches it, from the register request's own URL:
    http → ws, https → wss (uvicorn has already applied X-Forwarded-Proto from trusted
    proxies to the scheme)."""
    return f"{'wss' if scheme in ('https', 'wss') else 'ws'}://{host}"
