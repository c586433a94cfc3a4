"""The LKPS endpoints as data: what to send, and how to read the answer.

Both clients send the same `Call`s and read responses with the same functions; only the
I/O (blocking or awaited) lives in `_client.py` and `_async_client.py`. Nothing here
touches the network, so this is also where the request/response rules are easiest to read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote
from uuid import UUID

import httpx

from lkps_client._exceptions import (
    AgentNotConnectedError,
    AuthenticationError,
    BadRequestError,
    LkpsError,
    NotAuthorizedError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    RegistrationGoneError,
    ServerError,
    ServiceUnavailableError,
    UnexpectedResponseError,
)
from lkps_client._models import (
    AgentInfo,
    AgentRegistration,
    AuditRecord,
    AuthorizationOverride,
    ChainVerification,
    Heartbeat,
    Session,
    SessionRecord,
    parse_agents,
    parse_audit_page,
    parse_checkpoints,
    parse_heartbeat,
    parse_override,
    parse_registration,
    parse_session,
    parse_session_record,
    parse_session_records,
    parse_verification,
)

T = TypeVar("T")

REQUEST_ID_HEADER = "X-Request-ID"


@dataclass(frozen=True)
class Reply:
    """A response as the parsers see it: status, decoded JSON (None if absent), request id."""

    status: int
    body: Any
    request_id: str | None


@dataclass(frozen=True)
class Call(Generic[T]):
    method: Literal["GET", "POST", "PUT", "DELETE"]
    path: str
    parse: Callable[[Reply], T]
    params: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, Any] | None = None
    # Statuses besides 2xx that `parse` answers instead of raising (404 → None).
    also_parse: frozenset[int] = frozenset()
    # The error a 404 with LKPS's error body raises; start_session narrows it.
    not_found: type[NotFoundError] = NotFoundError


def _segment(agent_id: str | UUID) -> str:
    # Quoted whole, so an id can never step into another path.
    return quote(str(agent_id), safe="")


# Endpoints


def start_session(agent_id: str | UUID, metadata: Mapping[str, Any] | None) -> Call[Session]:
    body: dict[str, Any] = {"agent_entra_app_id": str(agent_id)}
    if metadata is not None:
        body["metadata"] = dict(metadata)
    return Call(
        "POST",
        "/api/session/start",
        lambda reply: parse_session(reply.body, reply.request_id),
        body=body,
        not_found=AgentNotConnectedError,
    )


def register_agent(
    *,
    enforce_client_authz: bool | None,
    version: str | None,
    metadata: Mapping[str, Any] | None,
    registration_id: str | None,
    worker_connected: bool | None = None,
) -> Call[AgentRegistration]:
    body: dict[str, Any] = {}
    for name, value in (
        ("enforce_client_authz", enforce_client_authz),
        ("version", version),
        ("registration_id", registration_id),
        ("worker_connected", worker_connected),
    ):
        if value is not None:
            body[name] = value
    if metadata is not None:
        body["metadata"] = dict(metadata)
    return Call(
        "POST",
        "/api/agent/register",
        lambda reply: parse_registration(reply.body, reply.request_id),
        body=body,
    )


def _registration_ref(registration_id: str | None) -> dict[str, Any]:
    return {} if registration_id is None else {"registration_id": registration_id}


def agent_heartbeat(
    registration_id: str | None, worker_connected: bool | None = None
) -> Call[Heartbeat]:
    body = _registration_ref(registration_id)
    if worker_connected is not None:
        body["worker_connected"] = worker_connected
    return Call(
        "POST",
        "/api/agent/heartbeat",
        lambda reply: parse_heartbeat(reply.body),
        body=body,
        not_found=RegistrationGoneError,
    )


def deregister_agent(registration_id: str | None) -> Call[None]:
    return Call(
        "POST",
        "/api/agent/deregister",
        lambda reply: None,
        body=_registration_ref(registration_id),
    )


def list_agents() -> Call[list[AgentInfo]]:
    return Call("GET", "/api/agents", lambda reply: parse_agents(reply.body))


AuditPage = tuple[list[AuditRecord], str | None]


def get_session(session_id: str) -> Call[SessionRecord]:
    return Call(
        "GET",
        f"/api/sessions/{quote(session_id, safe='')}",
        lambda reply: parse_session_record(reply.body),
    )


def list_sessions(
    *, agent_id: str | UUID | None, since: datetime | None, state: str | None, limit: int
) -> Call[list[SessionRecord]]:
    if limit < 1:
        raise ValueError("limit must be at least 1")
    params = {"limit": str(limit)}
    if agent_id is not None:
        params["agent"] = str(agent_id)
    if state is not None:
        params["state"] = state
    if since is not None:
        if since.tzinfo is None:
            raise ValueError("since must be timezone-aware (e.g. datetime.now(UTC))")
        params["since"] = since.isoformat()
    return Call(
        "GET", "/api/sessions", lambda reply: parse_session_records(reply.body), params=params
    )


def audit_query(
    *,
    event: str | None,
    agent_id: str | UUID | None,
    client_app_id: str | UUID | None,
    cwid: str | None,
    outcome: str | None,
    since: datetime | None,
    until: datetime | None,
    page_size: int,
) -> dict[str, str]:
    """The filters of `audit_records` as query parameters, checked before any request."""
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    params = {"limit": str(page_size)}
    for name, value in (
        ("event", event),
        ("agent_id", agent_id),
        ("client_app_id", client_app_id),
        ("cwid", cwid),
        ("outcome", outcome),
    ):
        if value is not None:
            params[name] = str(value)
    for name, moment in (("since", since), ("until", until)):
        if moment is not None:
            if moment.tzinfo is None:
                # A naive time would be read in the server's zone, silently shifting the window.
                raise ValueError(f"{name} must be timezone-aware (e.g. datetime.now(UTC))")
            params[name] = moment.isoformat()
    return params


def audit_page(query: Mapping[str, str], cursor: str | None) -> Call[AuditPage]:
    params = dict(query) if cursor is None else {**query, "cursor": cursor}
    return Call("GET", "/api/audit", lambda reply: parse_audit_page(reply.body), params=params)


def verify_audit() -> Call[ChainVerification]:
    return Call("GET", "/api/audit/verify", lambda reply: parse_verification(reply.body))


def audit_checkpoints(limit: int) -> Call[list[dict[str, Any]]]:
    if limit < 1:
        raise ValueError("limit must be at least 1")
    return Call(
        "GET",
        "/api/audit/checkpoints",
        lambda reply: parse_checkpoints(reply.body),
        params={"limit": str(limit)},
    )


def _override_path(agent_id: str | UUID) -> str:
    return f"/api/agents/{_segment(agent_id)}/authorization"


def get_authorization_override(agent_id: str | UUID) -> Call[AuthorizationOverride | None]:
    def parse(reply: Reply) -> AuthorizationOverride | None:
        return None if reply.status == 404 else parse_override(reply.body)

    return Call("GET", _override_path(agent_id), parse, also_parse=frozenset({404}))


def set_authorization_override(
    agent_id: str | UUID,
    enforce_client_authz: bool | None,
    additional_clients: Sequence[str | UUID],
) -> Call[AuthorizationOverride]:
    if isinstance(additional_clients, str):
        # A str is a Sequence[str]: "abc" would otherwise become ["a", "b", "c"].
        raise TypeError("additional_clients must be a sequence of client app ids, not a str")
    body = {
        "enforce_client_authz": enforce_client_authz,
        "additional_clients": [str(client) for client in additional_clients],
    }
    return Call(
        "PUT", _override_path(agent_id), lambda reply: parse_override(reply.body), body=body
    )


def clear_authorization_override(agent_id: str | UUID) -> Call[None]:
    return Call("DELETE", _override_path(agent_id), lambda reply: None)


# Responses


def read_response(call: Call[T], response: httpx.Response, sent_request_id: str) -> T:
    """The call's result, or the `LkpsError` the response stands for."""
    # LKPS echoes the id we sent; a gateway that answered on its own may not.
    request_id = response.headers.get(REQUEST_ID_HEADER) or sent_request_id
    status = response.status_code
    if not (200 <= status < 300 or status in call.also_parse):
        raise error_from_response(response, request_id, call.not_found)
    try:
        body = response.json() if response.content else None
        return call.parse(Reply(status, body, request_id))
    except (KeyError, TypeError, ValueError) as exc:
        raise UnexpectedResponseError(
            status,
            "unexpected_response",
            f"The response to {call.method} {call.path} is not what the LKPS API "
            f"documents ({type(exc).__name__}: {exc})",
            request_id,
        ) from exc


_ERRORS: Mapping[int, type[LkpsError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: NotAuthorizedError,
    413: PayloadTooLargeError,
}


def error_from_response(
    response: httpx.Response, request_id: str, not_found: type[NotFoundError]
) -> LkpsError:
    status = response.status_code
    contract = _contract_body(response.content)
    if contract is not None:
        code, message, request_id = (
            contract["error"],
            contract["message"],
            contract.get("request_id") or request_id,
        )
    else:
        # Not LKPS's body (a gateway's HTML page, an empty 502): map by status alone.
        code = f"http_{status}"
        message = _phrase(status)
    if status in (429, 503):
        waiting = ServiceUnavailableError if status == 503 else RateLimitedError
        return waiting(
            status,
            code,
            message,
            request_id,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    if status == 404:
        # Only LKPS's own 404 says the agent is missing; a bare 404 means a wrong base URL.
        cls: type[LkpsError] = not_found if contract is not None else NotFoundError
    elif status >= 500:
        cls = ServerError
    else:
        cls = _ERRORS.get(status, LkpsError)
    return cls(status, code, message, request_id)


def _contract_body(content: bytes) -> dict[str, str] | None:
    try:
        document = json.loads(content)
    except ValueError:
        return None
    if (
        isinstance(document, dict)
        and isinstance(document.get("error"), str)
        and isinstance(document.get("message"), str)
    ):
        request_id = document.get("request_id")
        return {
            "error": document["error"],
            "message": document["message"],
            **({"request_id": request_id} if isinstance(request_id, str) else {}),
        }
    return None


def _phrase(status: int) -> str:
    try:
        return f"LKPS answered {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"LKPS answered {status}"


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds: delta-seconds (fractions tolerated) or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = (moment - datetime.now(moment.tzinfo)).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)
