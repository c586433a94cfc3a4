"""What `lkps serve` logged, checked against everything secret a test handed out or got.

The approach of tests/cli/test_serve.py (grep the process output for each token's
signature), made thorough enough for thousands of tokens and lines: every token or
secret is cut into aligned 16-character pieces, and every run of token characters in
every log line is searched for any of them, at every offset. So any leaked fragment of
31 characters or more of a secret is found (a whole JWT signature is 43 to 342), and
so is any whole secret of 16 characters or more, wherever it sits in a line (shorter
runs, such as a forged token's `alg` header, are not searched for).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.faults.traffic import Traffic

PIECE = 16
_RUNS = re.compile(r"[A-Za-z0-9_-]{%d,}" % PIECE)
_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
# Random claims only a token carries: seeing one in a log means its contents were logged.
_TOKEN_ONLY_CLAIMS = ("aio", "uti", "rh", "jti")
# Loggers that only ever speak while answering a request.
REQUEST_LOGGERS = frozenset({"lkps.audit", "lkps.api.errors"})


def secret_material(secret: str) -> list[str]:
    """The parts of `secret` that must never be logged, each a run of token characters:
    for a JWT its claims and signature (the header is not secret, and the same for every
    token of a key) and its random claims; anything else as it is."""
    if _JWT.match(secret):
        _, payload, signature = secret.split(".")
        parts = [payload, signature]
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except ValueError:
            claims = None
        if isinstance(claims, dict):
            parts += [str(claims[name]) for name in _TOKEN_ONLY_CLAIMS if name in claims]
    else:
        parts = [secret]
    # A log line is searched run by run, so a secret is searched for run by run too.
    return [run for part in parts for run in _RUNS.findall(part)]


def pieces(secrets: Iterable[str]) -> dict[str, str]:
    """Aligned 16-character pieces of every secret → the secret (for the report)."""
    found: dict[str, str] = {}
    for secret in secrets:
        for part in secret_material(secret):
            for start in range(0, len(part) - PIECE + 1, PIECE):
                found[part[start : start + PIECE]] = secret
            found[part[-PIECE:]] = secret
    return found


def leaks(text: str, index: Mapping[str, str]) -> list[str]:
    """Lines of `text` that carry a piece of a secret."""
    leaking = []
    for line in text.splitlines():
        for run in _RUNS.findall(line):
            if any(run[i : i + PIECE] in index for i in range(len(run) - PIECE + 1)):
                leaking.append(line)
                break
    return leaking


# What LKPS records on its own behalf, from a background job rather than a request: no
# request id to carry (nor do the audit checkpoints it signs).
LKPS_OWN_EVENTS = frozenset({"agent.expire", "session.agent_missing", "session.redispatched"})


@dataclass
class LogReport:
    lines: int = 0
    not_json: list[str] = field(default_factory=list)
    leaking: list[str] = field(default_factory=list)
    levels: set[str] = field(default_factory=set)
    with_request_id: int = 0
    ids_logged: set[str] = field(default_factory=set)
    # Lines that belong to a request (an audit decision, an error answer) without its id.
    missing_request_id: list[dict[str, Any]] = field(default_factory=list)
    # Request ids logged that no client received (a request whose answer was lost).
    unknown_request_ids: set[str] = field(default_factory=set)
    # Audited answers a client received without a log line of that request saying so.
    unlogged_answers: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.lines} log lines ({'/'.join(sorted(self.levels))}), "
            f"{self.with_request_id} with a request id, {len(self.leaking)} leaking, "
            f"{len(self.not_json)} not JSON"
        )


def check_logs(
    logs: Mapping[str, str], traffic: Traffic, extra_secrets: Iterable[str] = ()
) -> LogReport:
    """Every replica's log (`logs`: replica name → text) against what `traffic` saw.

    Each line must be a JSON object with time, level, logger and message; none may carry
    a piece of a secret; lines that belong to a request must carry its id, every id
    logged must be one a client got back from that replica (see `unknown_request_ids`),
    and every audited answer must have a log line of its request with the same status
    (rejected tokens, recorded at a bounded rate, need not).
    """
    report = LogReport()
    index = pieces([*traffic.secrets, *extra_secrets])
    for replica, text in logs.items():
        report.leaking += leaks(text, index)
        received = {
            e.request_id: e for e in traffic.exchanges if e.replica == replica and e.request_id
        }
        logged: dict[str, set[object]] = {}
        for line in text.splitlines():
            report.lines += 1
            try:
                entry = json.loads(line)
            except ValueError:
                report.not_json.append(line)
                continue
            if not isinstance(entry, dict) or not {"time", "level", "logger", "message"} <= set(
                entry
            ):
                report.not_json.append(line)
                continue
            report.levels.add(str(entry["level"]))
            request_id = entry.get("request_id")
            belongs_to_request = (
                entry["logger"] in REQUEST_LOGGERS
                and entry.get("audit_event") not in LKPS_OWN_EVENTS
                and "audit_checkpoint" not in entry
            )
            if request_id is None:
                if belongs_to_request:
                    report.missing_request_id.append(entry)
                continue
            report.with_request_id += 1
            report.ids_logged.add(str(request_id))
            if request_id not in received:
                report.unknown_request_ids.add(str(request_id))
            statuses = logged.setdefault(str(request_id), set())
            if "status" in entry:
                statuses.add(entry["status"])
        for request_id, exchange in received.items():
            if not exchange.audited:
                continue
            said = logged.get(request_id or "", set())
            if exchange.status not in said:
                report.unlogged_answers.append(
                    f"{replica} {exchange.path} {exchange.status} {request_id}"
                )
    return report


def assert_clean(report: LogReport, *, unknown_ids_allowed: int = 0) -> None:
    """The checks every fault test makes of its logs."""
    assert report.lines > 0, "no log lines at all"
    assert not report.not_json, f"{len(report.not_json)} lines not JSON: {report.not_json[:3]}"
    assert not report.leaking, f"secrets in {len(report.leaking)} lines: {report.leaking[:2]}"
    assert not report.missing_request_id, report.missing_request_id[:3]
    assert not report.unlogged_answers, report.unlogged_answers[:5]
    assert len(report.unknown_request_ids) <= unknown_ids_allowed, report.unknown_request_ids
