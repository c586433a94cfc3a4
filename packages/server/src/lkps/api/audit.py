"""The audit trail over HTTP, for holders of the `LKPS.Auditor` app role."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BeforeValidator, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from lkps.api.deps import BearerDoc, ServicesDep, authenticate
from lkps.api.openapi import error_responses
from lkps.api.schemas import AgentId, AuditPage, ChainReport, CheckpointList
from lkps.audit import AuditEvent, AuditFilter, Outcome

router = APIRouter(prefix="/api/audit", tags=["audit"])

MAX_PAGE = 1000


# An ISO 8601 date and time with a time zone: what `since` and `until` take. Checked on the
# text before pydantic reads it, which would also take a number as a Unix timestamp
# (`since=12345`) and a date-time without a zone.
_ZONED_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:[Zz]|[+-]\d{2}:?\d{2})"
)
_DATETIME = TypeAdapter(datetime)


def zoned_datetime(name: str) -> Callable[[object], datetime]:
    def parse(value: object) -> datetime:
        try:
            if isinstance(value, str) and _ZONED_DATETIME.fullmatch(value):
                return _DATETIME.validate_python(value)  # also: no 13th month, no 25th hour
        except ValidationError:
            pass
        raise ValueError(
            f'"{name}" must be an ISO 8601 date and time with a time zone '
            "(e.g. 2026-11-23T12:00:00Z)"
        )

    return parse


@router.get(
    "",
    response_model=AuditPage,
    dependencies=[BearerDoc],
    responses=error_responses(400, 401, 403, 503),
)
async def query_audit(
    request: Request,
    services: ServicesDep,
    event: Annotated[AuditEvent | None, Query(description="Event type")] = None,
    outcome: Annotated[Outcome | None, Query()] = None,
    agent_id: Annotated[AgentId | None, Query()] = None,
    client_app_id: Annotated[str | None, Query(max_length=64)] = None,
    cwid: Annotated[str | None, Query(max_length=256)] = None,
    since: Annotated[
        datetime | None,
        BeforeValidator(zoned_datetime("since")),
        Query(description="occurred_at >= since (ISO 8601 with a time zone)"),
    ] = None,
    until: Annotated[
        datetime | None,
        BeforeValidator(zoned_datetime("until")),
        Query(description="occurred_at < until (ISO 8601 with a time zone)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> JSONResponse:
    """Records matching every filter given, newest first, `limit` at a time. The order is
    the chain's (by sequence number), so pages never skip or repeat a record; pass
    `next_cursor` back as `cursor` for the next page."""
    caller = await authenticate(request, services)
    where = AuditFilter(
        event=str(event) if event else None,
        outcome=str(outcome) if outcome else None,
        agent_id=str(agent_id) if agent_id else None,
        client_app_id=client_app_id.lower() if client_app_id else None,
        actor_cwid=cwid,
        since=since,
        until=until,
    )
    page = await services.audit_trail.search(caller, where, limit=limit, cursor=cursor)
    # Rendered as the CLI and `lkps audit export` render records (`AuditPage` documents
    # the shape): a record read back is byte for byte what every other reader shows.
    return JSONResponse(
        {
            "records": [record.as_json() for record in page.records],
            "next_cursor": page.next_cursor,
        }
    )


@router.get(
    "/verify",
    response_model=ChainReport,
    dependencies=[BearerDoc],
    responses=error_responses(401, 403, 503),
)
async def verify_audit(request: Request, services: ServicesDep) -> ChainReport:
    """Walk the whole hash chain and report the first broken link, if any."""
    caller = await authenticate(request, services)
    result = await services.audit_trail.verify(caller)
    return ChainReport(
        ok=result.ok,
        records_checked=result.records_checked,
        head_seq=result.head_seq,
        broken_at_seq=result.broken_at_seq,
        problem=result.problem,
    )


@router.get(
    "/checkpoints",
    response_model=CheckpointList,
    dependencies=[BearerDoc],
    responses=error_responses(400, 401, 403, 503),
)
async def audit_checkpoints(
    request: Request,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> JSONResponse:
    """The newest signed checkpoints of the chain head, newest first: one JSON object a
    line of them is what `lkps audit verify --checkpoints` reads (docs/audit.md)."""
    caller = await authenticate(request, services)
    checkpoints = await services.audit_trail.checkpoints(caller, limit=limit)
    return JSONResponse({"checkpoints": [checkpoint.as_json() for checkpoint in checkpoints]})
