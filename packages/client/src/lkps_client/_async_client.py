"""`AsyncLkpsClient`: the asyncio client. Same calls as `LkpsClient`, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar
from uuid import UUID

import httpx

from lkps_client import _calls as calls
from lkps_client._auth import AsyncAuth, AsyncTokenCredential, AsyncTokenProvider
from lkps_client._base import DEFAULT_TIMEOUT, BaseClient
from lkps_client._environments import Environment, resolve_environment
from lkps_client._exceptions import LkpsError
from lkps_client._models import (
    AgentInfo,
    AgentRegistration,
    AuditRecord,
    AuthorizationOverride,
    ChainVerification,
    Heartbeat,
    Session,
    SessionRecord,
)

__all__ = ["AsyncLkpsClient"]

T = TypeVar("T")


class AsyncLkpsClient(BaseClient):
    """An asyncio LKPS client; meant to be long-lived and reused.

        async with AsyncLkpsClient(url, credential=aio_credential, scope=scope) as client:
            session = await client.start_session(agent_id)

    Arguments as for `LkpsClient`, except that `credential` is an async credential
    (`azure.identity.aio`: a sync one would block the event loop while it fetches tokens)
    and `token_provider` may be a plain or an async callable. The credential stays
    yours: close it yourself.
    """

    _auth: AsyncAuth

    def __init__(
        self,
        base_url: str,
        *,
        credential: AsyncTokenCredential | None = None,
        scope: str | None = None,
        token: str | None = None,
        token_provider: AsyncTokenProvider | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, timeout=timeout, retries=retries)
        self._auth = AsyncAuth(credential, token, token_provider, scope)
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient()

    @classmethod
    def for_environment(
        cls,
        environment: str | Environment,
        *,
        credential: AsyncTokenCredential | None = None,
        token: str | None = None,
        token_provider: AsyncTokenProvider | None = None,
        base_url: str | None = None,
        scope: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 0,
        http_client: httpx.AsyncClient | None = None,
    ) -> Self:
        """See `LkpsClient.for_environment`."""
        env = resolve_environment(environment, base_url, scope)
        return cls(
            env.base_url,
            credential=credential,
            scope=env.scope,
            token=token,
            token_provider=token_provider,
            timeout=timeout,
            retries=retries,
            http_client=http_client,
        )

    # Sessions

    async def start_session(
        self, agent_id: str | UUID, metadata: Mapping[str, Any] | None = None
    ) -> Session:
        """See `LkpsClient.start_session`."""
        return await self._send(calls.start_session(agent_id, metadata))

    # Agents

    async def register_agent(
        self,
        *,
        enforce_client_authz: bool | None = None,
        version: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        registration_id: str | None = None,
        worker_connected: bool | None = None,
    ) -> AgentRegistration:
        """See `LkpsClient.register_agent`."""
        return await self._send(
            calls.register_agent(
                enforce_client_authz=enforce_client_authz,
                version=version,
                metadata=metadata,
                registration_id=registration_id,
                worker_connected=worker_connected,
            )
        )

    async def agent_heartbeat(
        self, registration_id: str | None = None, *, worker_connected: bool | None = None
    ) -> Heartbeat:
        """See `LkpsClient.agent_heartbeat`."""
        return await self._send(calls.agent_heartbeat(registration_id, worker_connected))

    async def deregister_agent(self, registration_id: str | None = None) -> None:
        """See `LkpsClient.deregister_agent`."""
        await self._send(calls.deregister_agent(registration_id))

    # Administration

    async def get_session(self, session_id: str) -> SessionRecord:
        """A session and its steps: yours, your app's (app-only), or any (LKPS.Auditor)."""
        return await self._send(calls.get_session(session_id))

    async def list_sessions(
        self,
        *,
        agent_id: str | UUID | None = None,
        since: datetime | None = None,
        state: str | None = None,
        limit: int = 100,
    ) -> list[SessionRecord]:
        """Sessions, newest grant first (app role LKPS.Auditor)."""
        return await self._send(
            calls.list_sessions(agent_id=agent_id, since=since, state=state, limit=limit)
        )

    async def list_agents(self) -> list[AgentInfo]:
        """See `LkpsClient.list_agents`."""
        return await self._send(calls.list_agents())

    async def get_authorization_override(
        self, agent_id: str | UUID
    ) -> AuthorizationOverride | None:
        """See `LkpsClient.get_authorization_override`."""
        return await self._send(calls.get_authorization_override(agent_id))

    async def set_authorization_override(
        self,
        agent_id: str | UUID,
        *,
        enforce_client_authz: bool | None = None,
        additional_clients: Sequence[str | UUID] = (),
    ) -> AuthorizationOverride:
        """See `LkpsClient.set_authorization_override`."""
        return await self._send(
            calls.set_authorization_override(agent_id, enforce_client_authz, additional_clients)
        )

    async def clear_authorization_override(self, agent_id: str | UUID) -> None:
        """See `LkpsClient.clear_authorization_override`."""
        await self._send(calls.clear_authorization_override(agent_id))

    # Audit

    def audit_records(
        self,
        *,
        event: str | None = None,
        agent_id: str | UUID | None = None,
        client_app_id: str | UUID | None = None,
        cwid: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[AuditRecord]:
        """See `LkpsClient.audit_records`; iterate with `async for`."""
        query = calls.audit_query(
            event=event,
            agent_id=agent_id,
            client_app_id=client_app_id,
            cwid=cwid,
            outcome=outcome,
            since=since,
            until=until,
            page_size=page_size,
        )
        return self._audit_pages(query)

    async def _audit_pages(self, query: Mapping[str, str]) -> AsyncIterator[AuditRecord]:
        cursor: str | None = None
        while True:
            records, cursor = await self._send(calls.audit_page(query, cursor))
            for record in records:
                yield record
            if cursor is None:
                return

    async def verify_audit(self) -> ChainVerification:
        """See `LkpsClient.verify_audit`."""
        return await self._send(calls.verify_audit())

    async def audit_checkpoints(self, limit: int = 100) -> list[dict[str, Any]]:
        """See `LkpsClient.audit_checkpoints`."""
        return await self._send(calls.audit_checkpoints(limit))

    # I/O

    async def _send(self, call: calls.Call[T]) -> T:
        request_id = self._new_request_id()
        attempt = 0
        while True:
            try:
                token = await self._auth.token()
                request = self._build_request(self._http, call, token, request_id)
                response = await self._http.send(request)
            except httpx.RequestError as exc:
                error: LkpsError = self._transport_error(exc, request_id)
            else:
                try:
                    return self._read_response(call, response, request_id)
                except LkpsError as exc:
                    error = exc
            delay = self._after_failure(error, attempt)
            if delay is None:
                raise error
            await asyncio.sleep(delay)
            attempt += 1

    async def aclose(self) -> None:
        """Close the connection pool, unless the `http_client` was passed in."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
