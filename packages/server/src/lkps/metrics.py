"""Prometheus metrics, served by `lkps serve` on their own port (LKPS_METRICS_PORT).

With several worker processes every worker writes its samples to
PROMETHEUS_MULTIPROC_DIR (which `lkps serve` sets up) and the metrics server in the
parent process adds them up; with one worker the process's own registry is served.

Label values are bounded: routes are route templates, agents appear only where LKPS
knows them (a registered agent's granted or refused session), never as sent.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

HTTP_REQUESTS = Counter(
    "lkps_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "lkps_http_request_duration_seconds",
    "Time from request to the end of the response",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
SESSION_STARTS = Counter(
    "lkps_session_starts_total",
    "Session starts by outcome, status and agent (agent '-' where none is established)",
    ["outcome", "status", "agent"],
)
AUDIT_RECORDS = Counter("lkps_audit_records_total", "Audit records written", ["event", "outcome"])
AUDIT_WRITE = Histogram(
    "lkps_audit_write_seconds",
    "Time to commit one batch of audit records",
    buckets=LATENCY_BUCKETS,
)
AUDIT_BATCH = Histogram(
    "lkps_audit_batch_records",
    "Audit records committed per transaction (group commit)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
PRESENCE_READ_CALLERS = Histogram(
    "lkps_presence_read_callers",
    "Session starts answered by one presence read (concurrent ones share a read that"
    " started after each of them)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
AUDIT_REJECTIONS_UNRECORDED = Counter(
    "lkps_audit_rejections_unrecorded_total",
    "Rejected tokens left out of the audit trail by its rate bound (the next record of the"
    " same source and failure counts them)",
)
AUDIT_FAILURES = Counter(
    "lkps_audit_write_failures_total", "Audit batches that could not be committed"
)
AGENTS_REGISTERED = Gauge(
    "lkps_agents_registered", "Agents that ever registered", multiprocess_mode="max"
)
AGENTS_PRESENT = Gauge(
    "lkps_agents_present",
    "Agents present, as session starts see them: with a registered worker connection on a"
    " replica whose lease is alive (gateway mode), or a live registration (direct mode)",
    multiprocess_mode="max",
)
REGISTRATIONS_LIVE = Gauge(
    "lkps_agent_registrations_live",
    "Live agent registrations (worker processes)",
    multiprocess_mode="max",
)
JWKS_FETCHES = Counter(
    "lkps_jwks_fetches_total", "Fetches of the tenant's signing keys", ["outcome"]
)
BACKGROUND_FAILURES = Counter(
    "lkps_background_failures_total",
    "Runs of a background job (JWKS refresh, presence sweep) that raised; each is retried",
    ["task"],
)
GRAPH_REQUESTS = Counter(
    "lkps_graph_requests_total",
    "Microsoft Graph reads of pre-authorized clients",
    ["outcome"],
)
RATE_LIMITED = Counter("lkps_rate_limited_total", "Requests refused by a rate limit", ["limit"])
TOKEN_CACHE = Counter(
    "lkps_verified_token_cache_total",
    "Entra token checks answered from the verified-token cache, or verified anew",
    ["result"],
)
# Sessions followed through LiveKit's webhooks (lkps.sessions.lifecycle).
LIVEKIT_WEBHOOKS = Counter(
    "lkps_livekit_webhooks_total",
    "LiveKit webhook requests by event and result (applied, ignored, refused)",
    ["event", "result"],
)
SESSIONS_ENDED = Counter(
    "lkps_sessions_ended_total",
    "Sessions ended, by the last state they reached (granted, client_joined, agent_joined)",
    ["final_state"],
)
SESSION_AGENT_JOIN = Histogram(
    "lkps_session_grant_to_agent_seconds",
    "Time from a session's grant to its agent joining the room",
    buckets=(0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0),
)
SESSION_NO_SHOWS = Counter(
    "lkps_session_agent_missing_total",
    "Sessions whose agent had not joined LKPS_AGENT_JOIN_TIMEOUT_SECONDS after the client",
)
SESSION_REDISPATCHES = Counter(
    "lkps_session_redispatches_total",
    "Re-dispatches after a no-show, by outcome (dispatched, failed, job_under_way: the "
    "agent's first job was still held by a worker, so none was made)",
    ["outcome"],
)
SESSION_REDISPATCH_JOINED = Counter(
    "lkps_session_redispatch_joined_total",
    "Re-dispatched sessions whose agent then joined (retries that worked)",
)
# The audit chain checked by GET /api/audit/verify (an auditor, or a scheduled check):
# any "broken" is tampering or a lost record (docs/runbooks.md).
AUDIT_CHAIN_VERIFICATIONS = Counter(
    "lkps_audit_chain_verifications_total",
    "Audit chain verifications by result (ok, broken)",
    ["result"],
)
# The agent gateway's worker connections (lkps.gateway.metered), counted by the worker
# process that relays each: `livesum` adds up the live processes (the metrics server
# drops a dead process's samples). Agents are the authenticated ones (registrations).
GATEWAY_WORKERS = Gauge(
    "lkps_gateway_workers",
    "Worker connections relayed by the agent gateway, by agent and last reported status"
    " (available; full: WS_FULL or load at/above LKPS_LIVEKIT_AGENT_TARGET_LOAD; draining:"
    " registration ended, jobs still running)",
    ["agent", "status"],
    multiprocess_mode="livesum",
)
GATEWAY_WORKER_LOAD = Gauge(
    "lkps_gateway_worker_load",
    "Sum of the loads (0-1) the agent gateway's worker connections last reported, by agent"
    " (divided by lkps_gateway_workers: their mean load)",
    ["agent"],
    multiprocess_mode="livesum",
)


MetricT = TypeVar("MetricT", bound=MetricWrapperBase)


class Children(Generic[MetricT]):
    """`metric.labels(*values)`, each child made once: `.labels()` validates its values
    and takes a lock on every call, on paths that run thousands of times a second. For
    bounded label values only (each child is kept)."""

    def __init__(self, metric: MetricT) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], MetricT] = {}

    def __call__(self, *values: str) -> MetricT:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child
