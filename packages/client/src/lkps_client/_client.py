"""`LkpsClient`: the blocking client."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar
from uuid import UUID

import httpx

from lkps_client import _calls as calls
from lkps_client._auth import SyncAuth, TokenCredential, TokenProvider
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

__all__ = ["LkpsClient"]

T = TypeVar("T")


class LkpsClient(BaseClient):
    """A blocking LKPS client; thread-safe, and meant to be long-lived and reused.

        with LkpsClient(url, credential=DefaultAzureCredential(), scope=scope) as client:
            session = client.start_session(agent_id, metadata={"language": "en"})

    Authenticate with exactly one of:

    - `credential` + `scope`: an azure-identity credential (anything with
      `get_token(*scopes)`); its token is reused until 5 minutes before it expires.
    - `token`: a fixed bearer token, for scripts and tests; it is never refreshed.
    - `token_provider`: a callable returning a bearer token, called before every request
      (e.g. MSAL's `acquire_token_silent` wrapped in a lambda).

    `timeout` (seconds) applies to every request, also through an `http_client` you pass
    in; such a client is used as configured otherwise (proxies, TLS) and is not closed by
    `close()`. `retries` > 0 retries a 503 (after its Retry-After) and network failures;
    nothing else is retried, since it would fail the same way again.
    """

    _auth: SyncAuth

    def __init__(
        self,
        base_url: str,
        *,
        credential: TokenCredential | None = None,
        scope: str | None = None,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 0,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url, timeout=timeout, retries=retries)
        self._auth = SyncAuth(credential, token, token_provider, scope)
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.Client()

    @classmethod
    def for_environment(
        cls,
        environment: str | Environment,
        *,
        credential: TokenCredential | None = None,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        base_url: str | None = None,
        scope: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 0,
        http_client: httpx.Client | None = None,
    ) -> Self:
        """A client for a known deployment ("np", "prod", or "dev" for `lkps dev`): its URL, and with `credential`
        its scope, filled in. `base_url`/`scope` override them (a private endpoint, say)."""
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

    def start_session(
        self, agent_id: str | UUID, metadata: Mapping[str, Any] | None = None
    ) -> Session:
        """Start a session with an agent: a new room, and a token that makes LiveKit
        dispatch the agent into it. `metadata` (at most 50 keys, 10 KiB as JSON) reaches
        the agent as its job metadata.

        Raises `AgentNotConnectedError` when the agent is not registered and
        `NotAuthorizedError` when it enforces client authorization and this client app
        is not pre-authorized.
        """
        return self._send(calls.start_session(agent_id, metadata))

    # Agents (an agent's own app-only token; `lkps-agent` makes these calls for you)

    def register_agent(
        self,
        *,
        enforce_client_authz: bool | None = None,
        version: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        registration_id: str | None = None,
        worker_connected: bool | None = None,
    ) -> AgentRegistration:
        """Register this agent worker (or renew `registration_id`): a LiveKit token for
        its worker connection, and the heartbeat interval LKPS expects. The agent id is
        the app id of the calling token; a user's token gets `NotAuthorizedError`.
        `worker_connected=False` registers without becoming present: sessions get 404
        until a heartbeat says the worker is connected to LiveKit."""
        return self._send(
            calls.register_agent(
                enforce_client_authz=enforce_client_authz,
                version=version,
                metadata=metadata,
                registration_id=registration_id,
                worker_connected=worker_connected,
            )
        )

    def agent_heartbeat(
        self, registration_id: str | None = None, *, worker_connected: bool | None = None
    ) -> Heartbeat:
        """Keep a registration present. Raises `RegistrationGoneError` when it lapsed or
        was deregistered: register again. `worker_connected` tells LKPS whether the
        agent's worker is connected to LiveKit (sessions get 404 while it is not)."""
        return self._send(calls.agent_heartbeat(registration_id, worker_connected))

    def deregister_agent(self, registration_id: str | None = None) -> None:
        """End a registration; without an id, every registration of the calling agent."""
        self._send(calls.deregister_agent(registration_id))

    # Administration (app role LKPS.Admin; reading also LKPS.Auditor)

    def get_session(self, session_id: str) -> SessionRecord:
        """A session and its steps: yours, your app's (app-only), or any (LKPS.Auditor)."""
        return self._send(calls.get_session(session_id))

    def list_sessions(
        self,
        *,
        agent_id: str | UUID | None = None,
        since: datetime | None = None,
        state: str | None = None,
        limit: int = 100,
    ) -> list[SessionRecord]:
        """Sessions, newest grant first (app role LKPS.Auditor)."""
        return self._send(
            calls.list_sessions(agent_id=agent_id, since=since, state=state, limit=limit)
        )

    def list_agents(self) -> list[AgentInfo]:
        """Every agent that ever registered, with presence and effective enforcement."""
        return self._send(calls.list_agents())

    def get_authorization_override(self, agent_id: str | UUID) -> AuthorizationOverride | None:
        """The operator override of an agent's client authorization; None when unset."""
        return self._send(calls.get_authorization_override(agent_id))

    def set_authorization_override(
        self,
        agent_id: str | UUID,
        *,
        enforce_client_authz: bool | None = None,
        additional_clients: Sequence[str | UUID] = (),
    ) -> AuthorizationOverride:
        """Replace the override: force enforcement on/off (None: as registered) and/or
        allow further client apps. The whole override is replaced, not merged."""
        return self._send(
            calls.set_authorization_override(agent_id, enforce_client_authz, additional_clients)
        )

    def clear_authorization_override(self, agent_id: str | UUID) -> None:
        """Remove the override: the registration and the authorization source decide."""
        self._send(calls.clear_authorization_override(agent_id))

    # Audit (LKPS.Admin or LKPS.Auditor)

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
    ) -> Iterator[AuditRecord]:
        """Audit records matching every given filter, newest first, fetched a page at a
        time as you iterate (so breaking out early saves requests). `since`/`until` must
        be timezone-aware."""
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

    def _audit_pages(self, query: Mapping[str, str]) -> Iterator[AuditRecord]:
        cursor: str | None = None
        while True:
            records, cursor = self._send(calls.audit_page(query, cursor))
            yield from records
            if cursor is None:
                return

    def verify_audit(self) -> ChainVerification:
        """Have LKPS check its audit hash chain; `ok` False names the first broken link."""
        return self._send(calls.verify_audit())

    def audit_checkpoints(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest signed checkpoints of the audit chain's head, newest first (at most
        `limit`, which LKPS caps at 1,000), each as LKPS serves it: written one JSON
        object a line, what `lkps audit verify --checkpoints` checks the trail against."""
        return self._send(calls.audit_checkpoints(limit))

    # I/O

    def _send(self, call: calls.Call[T]) -> T:
        request_id = self._new_request_id()
        attempt = 0
        while True:
            try:
                request = self._build_request(self._http, call, self._auth.token(), request_id)
                response = self._http.send(request)
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
            time.sleep(delay)
            attempt += 1

    def close(self) -> None:
        """Close the connection pool, unless the `http_client` was passed in."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
