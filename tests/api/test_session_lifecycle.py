"""Sessions followed through LiveKit's webhooks: each step recorded once whatever the
events' order or repetition, the no-show retry, a reopened room, who may read a session,
and the webhook's refusals (no signature, another key, a changed body, an old event)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from livekit.protocol.webhook import WebhookEvent
from prometheus_client import REGISTRY

from lkps.audit import AuditRecord
from lkps_testkit.livekit import LiveKitDouble
from tests.api.test_audited_changes import assert_unavailable, refuse_records
from tests.api.util import running_lkps
from tests.api.webhooks import body_of, event, signature, signed
from tests.backends import StoreSql
from tests.conftest import AGENT, CLIENT_A, LIVEKIT_KEY, LIVEKIT_SECRET, FakeClock, Lkps
from tests.livekit_double.fake_worker import FakeWorker

pytestmark = pytest.mark.api

WEBHOOK = "/api/livekit/webhook"
LIFECYCLE_EVENTS = (
    "session.client_joined",
    "session.agent_joined",
    "session.ended",
    "session.agent_missing",
    "session.redispatched",
    "session.reopened",
)


@pytest.fixture(scope="module")
def livekit() -> Iterator[LiveKitDouble]:
    with LiveKitDouble(api_key=LIVEKIT_KEY, api_secret=LIVEKIT_SECRET) as double:
        yield double


@pytest.fixture
async def lk(
    settings_values: dict[str, Any], clock: FakeClock, entra: Any, livekit: LiveKitDouble
) -> AsyncIterator[Lkps]:
    """LKPS whose re-dispatches go to the LiveKit double."""
    values = {**settings_values, "livekit_url": livekit.url}
    async with running_lkps(values, clock, entra) as lkps:
        yield lkps


async def started(lkps: Lkps, **body: Any) -> dict[str, Any]:
    assert (await lkps.register()).status_code == 200
    response = await lkps.start_session(**body)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


async def send(lkps: Lkps, message: WebhookEvent) -> httpx.Response:
    body, headers = signed(message)
    return await lkps.http.post(WEBHOOK, content=body, headers=headers)


async def lifecycle_records(lkps: Lkps) -> list[AuditRecord]:
    return [r for r in await lkps.audit_records() if r.event in LIFECYCLE_EVENTS]


async def read_session(lkps: Lkps, session_id: str, token: str | None = None) -> httpx.Response:
    token = token or lkps.user_token()
    return await lkps.http.get(
        f"/api/sessions/{session_id}", headers={"Authorization": f"Bearer {token}"}
    )


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def auditor(lkps: Lkps) -> str:
    return lkps.user_token("ops.auditor", roles=["LKPS.Auditor"])


async def test_a_full_session_shows_every_step_and_its_duration(
    lkps: Lkps, clock: FakeClock
) -> None:
    ended_before = sample("lkps_sessions_ended_total", final_state="agent_joined")
    joins_before = sample("lkps_session_grant_to_agent_seconds_count")
    session = await started(lkps)
    room, now = session["room_name"], clock.now
    assert (await send(lkps, event("room_started", room, created=now()))).json() == {
        "applied": False
    }
    clock.advance(2)
    joined = await send(lkps, event("participant_joined", room, created=now(), identity="alice"))
    assert joined.json() == {"applied": True}
    clock.advance(3)
    agent = event("participant_joined", room, created=now(), identity="agent-AJ_x1y2", agent=True)
    assert (await send(lkps, agent)).json() == {"applied": True}
    clock.advance(42)
    assert (await send(lkps, event("room_finished", room, created=now()))).json() == {
        "applied": True
    }

    response = await read_session(lkps, session["session_id"])
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["state"] == "ended" and view["final_state"] == "agent_joined"
    assert view["duration_seconds"] == pytest.approx(45)
    assert view["room_sid"] == "RM_original"
    assert view["client_identity"] == "alice" and view["client_sid"].startswith("PA_")
    assert view["agent_identity"] == "agent-AJ_x1y2" and view["job_id"] == "AJ_x1y2"
    assert [step["step"] for step in view["steps"]] == [
        "granted",
        "client_joined",
        "agent_joined",
        "ended",
    ]
    records = await lifecycle_records(lkps)
    assert [r.event for r in records] == [
        "session.client_joined",
        "session.agent_joined",
        "session.ended",
    ]
    for record in records:
        assert record.room_name == room and record.agent_id == AGENT
        assert record.client_app_id == CLIENT_A and record.actor_cwid == "alice"
        assert json.loads(record.details or "{}")["session_id"] == session["session_id"]
    ended = json.loads(records[-1].details or "{}")
    assert ended["duration_seconds"] == pytest.approx(45) and ended["agent_joined"] is True
    assert json.loads(records[1].details or "{}")["seconds_since_grant"] == pytest.approx(5)
    assert sample("lkps_sessions_ended_total", final_state="agent_joined") == ended_before + 1
    assert sample("lkps_session_grant_to_agent_seconds_count") == joins_before + 1


async def test_repeated_and_out_of_order_events_record_each_step_once(
    lkps: Lkps, clock: FakeClock
) -> None:
    session = await started(lkps)
    room, now = session["room_name"], clock.now
    end = event("room_finished", room, created=now())
    agent = event("participant_joined", room, created=now(), identity="agent-AJ_a", agent=True)
    client = event("participant_joined", room, created=now(), identity="alice")
    late_start = event("room_started", room, created=now())
    for message in (agent, client, agent, end, client, end, late_start, agent):
        assert (await send(lkps, message)).status_code == 200
    # Concurrent copies (several replicas, one store) too.
    answers = await asyncio.gather(*(send(lkps, end) for _ in range(5)))
    assert all(a.json() == {"applied": False} for a in answers)

    records = await lifecycle_records(lkps)
    assert sorted(r.event for r in records) == [
        "session.agent_joined",
        "session.client_joined",
        "session.ended",
    ]
    view = (await read_session(lkps, session["session_id"])).json()
    assert view["state"] == "ended" and view["final_state"] == "agent_joined"


async def test_webhooks_arriving_together_record_each_step_once(
    lkps: Lkps, clock: FakeClock
) -> None:
    """Webhooks that arrive together are applied as one batch (on PostgreSQL, one
    statement per kind of step): every room's client and agent joins, sent at once with
    their repeats and events of a room LKPS did not grant, are each applied and recorded
    once, and each answered."""
    assert (await lkps.register()).status_code == 200
    sessions = [
        (await lkps.start_session(token=lkps.user_token(f"user{index}"))).json()
        for index in range(6)
    ]
    joins = [
        event("participant_joined", s["room_name"], created=clock.now(), **options)
        for s in sessions
        for options in ({"identity": "alice"}, {"identity": "agent-AJ_x", "agent": True})
    ]
    stranger = event("participant_joined", "not-granted", created=clock.now(), identity="x")

    answers = await asyncio.gather(*(send(lkps, m) for m in [*joins, stranger, *joins]))

    assert [a.status_code for a in answers] == [200] * len(answers)
    assert sum(a.json()["applied"] for a in answers) == len(joins)
    records = await lifecycle_records(lkps)
    for s in sessions:
        view = (await read_session(lkps, s["session_id"], auditor(lkps))).json()
        assert (view["state"], view["job_id"]) == ("agent_joined", "AJ_x")
        assert sorted(r.event for r in records if r.room_name == s["room_name"]) == [
            "session.agent_joined",
            "session.client_joined",
        ]
    assert len(records) == len(joins)
    assert (await lkps.services.audit.verify()).ok


async def test_events_of_rooms_lkps_did_not_grant_change_nothing(
    lkps: Lkps, clock: FakeClock
) -> None:
    message = event("participant_joined", "someone-elses-room", created=clock.now(), identity="x")
    assert (await send(lkps, message)).json() == {"applied": False}
    assert await lifecycle_records(lkps) == []


async def test_a_room_recreated_after_the_end_is_recorded_as_reopened(
    lkps: Lkps, clock: FakeClock
) -> None:
    session = await started(lkps)
    room, now = session["room_name"], clock.now
    for message in (
        event("room_started", room, created=now()),
        event("participant_joined", room, created=now(), identity="alice"),
        event("room_finished", room, created=now()),
    ):
        await send(lkps, message)
    clock.advance(40)
    again = event("room_started", room, created=now(), room_sid="RM_second")
    assert (await send(lkps, again)).json() == {"applied": True}
    assert (await send(lkps, again)).json() == {"applied": False}  # repeated: once
    # The reopened room's own end is not the session's end.
    second_end = event("room_finished", room, created=now(), room_sid="RM_second")
    assert (await send(lkps, second_end)).json() == {"applied": False}

    records = await lifecycle_records(lkps)
    assert [r.event for r in records][-1] == "session.reopened"
    assert sum(r.event == "session.reopened" for r in records) == 1
    reopened = json.loads(records[-1].details or "{}")
    assert reopened["room_sid"] == "RM_second" and reopened["original_room_sid"] == "RM_original"
    view = (await read_session(lkps, session["session_id"])).json()
    assert view["state"] == "reopened" and view["reopened_room_sid"] == "RM_second"


# The no-show: client in, no agent within LKPS_AGENT_JOIN_TIMEOUT_SECONDS.


def explicit_dispatches(livekit: LiveKitDouble, room: str) -> list[Any]:
    """LKPS's dispatches (the double adds an automatic one to a room without agents)."""
    return [d for d in livekit.dispatches(room) if not d.implicit]


async def no_show_scan(lkps: Lkps) -> None:
    job = lkps.services.background["lkps-session-no-shows"]
    job.wake()
    async with asyncio.timeout(30):
        await job.ran(job.runs + 1)


async def test_an_agent_that_does_not_join_is_recorded_missing_and_dispatched_once_more(
    lk: Lkps, clock: FakeClock, livekit: LiveKitDouble
) -> None:
    missing_before = sample("lkps_session_agent_missing_total")
    dispatched_before = sample("lkps_session_redispatches_total", outcome="dispatched")
    worked_before = sample("lkps_session_redispatch_joined_total")
    session = await started(lk, metadata={"topic": "billing", "n": 1})
    room, now = session["room_name"], clock.now
    await send(lk, event("participant_joined", room, created=now(), identity="alice"))
    clock.advance(9)
    await no_show_scan(lk)
    assert await lifecycle_records(lk) == [] or all(
        r.event == "session.client_joined" for r in await lifecycle_records(lk)
    )
    clock.advance(2)
    # Two replicas scanning at once: one claims the session.
    await asyncio.gather(lk.services.lifecycle.check_no_shows(), no_show_scan(lk))

    events = [r.event for r in await lifecycle_records(lk)]
    assert events == ["session.client_joined", "session.agent_missing", "session.redispatched"]
    (dispatch,) = explicit_dispatches(livekit, room)
    assert dispatch.agent_name == AGENT
    assert dispatch.metadata == '{"topic":"billing","n":1}'  # as the first dispatch had it
    redispatched = json.loads((await lifecycle_records(lk))[-1].details or "{}")
    assert redispatched == {
        "session_id": session["session_id"],
        "room_sid": "RM_original",
        "dispatched": True,
        "dispatch_id": dispatch.id,
    }

    clock.advance(3)
    agent = event("participant_joined", room, created=now(), identity="agent-AJ_b", agent=True)
    assert (await send(lk, agent)).json() == {"applied": True}
    records = await lifecycle_records(lk)
    assert records[-1].event == "session.agent_joined"
    assert json.loads(records[-1].details or "{}")["after_redispatch"] is True
    assert sample("lkps_session_agent_missing_total") == missing_before + 1
    assert sample("lkps_session_redispatches_total", outcome="dispatched") == dispatched_before + 1
    assert sample("lkps_session_redispatch_joined_total") == worked_before + 1
    view = (await read_session(lk, session["session_id"])).json()
    assert view["redispatched"] is True and view["redispatch_id"] == dispatch.id
    assert [s["step"] for s in view["steps"]] == [
        "granted",
        "client_joined",
        "agent_missing",
        "agent_joined",
    ]


async def test_an_agent_missing_after_the_retry_is_recorded_and_not_retried_again(
    lk: Lkps, clock: FakeClock, livekit: LiveKitDouble
) -> None:
    session = await started(lk)
    room, now = session["room_name"], clock.now
    await send(lk, event("participant_joined", room, created=now(), identity="alice"))
    for _ in range(3):
        clock.advance(11)
        await no_show_scan(lk)
    assert len(explicit_dispatches(livekit, room)) == 1
    records = await lifecycle_records(lk)
    assert [r.event for r in records] == [
        "session.client_joined",
        "session.agent_missing",
        "session.redispatched",
        "session.agent_missing",
    ]
    assert json.loads(records[-1].details or "{}")["after_redispatch"] is True
    await send(lk, event("room_finished", room, created=now()))
    ended = json.loads((await lifecycle_records(lk))[-1].details or "{}")
    assert ended["final_state"] == "client_joined"
    assert ended["agent_joined"] is False and ended["redispatched"] is True


async def test_an_agent_whose_job_a_worker_holds_is_not_dispatched_again(
    lk: Lkps, clock: FakeClock, livekit: LiveKitDouble
) -> None:
    """A worker took the job, but its agent is slow to join (a cold start on a busy
    host): the session is recorded as missing its agent, and no second job is made,
    which would put two agents in the user's room (seen on a loaded CI machine)."""
    registration = (await lk.register()).json()
    async with FakeWorker(livekit, registration["token"], agent_name=AGENT) as worker:
        started_session = await lk.start_session()
        assert started_session.status_code == 200, started_session.text
        session = started_session.json()
        room = session["room_name"]
        await livekit.join_async(session["participant_token"])
        offer = await worker.next_offer()
        await worker.answer(offer, identity="agent-slow")
        job = await livekit.wait_for_job_async(AGENT, room=room)
        dispatches_before = len(livekit.dispatches(room))
        joined = event("participant_joined", room, created=clock.now(), identity="alice")
        assert (await send(lk, joined)).status_code == 200
        clock.advance(11)
        await no_show_scan(lk)

        records = await lifecycle_records(lk)
        assert [r.event for r in records] == [
            "session.client_joined",
            "session.agent_missing",
            "session.redispatched",
        ]
        assert json.loads(records[-1].details or "{}") == {
            "session_id": session["session_id"],
            "room_sid": "RM_original",
            "dispatched": False,
            "job_id": job.id,
        }
        assert records[-1].reason == f"not dispatched again: the agent's job {job.id} is under way"
        assert len(livekit.dispatches(room)) == dispatches_before
        assert len(livekit.jobs(AGENT, room)) == 1


async def test_a_failed_redispatch_is_recorded_as_refused(
    settings_values: dict[str, Any], clock: FakeClock, entra: Any
) -> None:
    # Nothing listens at LiveKit's URL: the dispatch fails, LKPS records it and goes on.
    values = {**settings_values, "livekit_api_url": "http://127.0.0.1:9"}
    async with running_lkps(values, clock, entra) as lkps:
        session = await started(lkps)
        room = session["room_name"]
        await send(lkps, event("participant_joined", room, created=clock.now(), identity="a"))
        clock.advance(11)
        await no_show_scan(lkps)
        records = await lifecycle_records(lkps)
    assert records[-1].event == "session.redispatched"
    assert records[-1].outcome == "denied" and (records[-1].reason or "").startswith(
        "dispatch failed"
    )


# A step and its record are committed together: when the record cannot be written, the
# step is not applied either, and LiveKit's retry applies it with its record.


async def test_a_step_whose_record_fails_is_applied_again_with_its_record(
    lkps: Lkps, clock: FakeClock
) -> None:
    session = await started(lkps)
    joined = event("participant_joined", session["room_name"], created=clock.now(), identity="a")
    await lkps.services.audit.stop()
    failed = await send(lkps, joined)
    assert failed.status_code == 503
    assert set(failed.json()) == {"error", "message", "request_id"}
    await lkps.services.audit.start()
    assert (await send(lkps, joined)).json() == {"applied": True}
    assert [r.event for r in await lifecycle_records(lkps)] == ["session.client_joined"]


async def test_a_step_is_not_applied_when_its_record_is_refused(
    lkps: Lkps, clock: FakeClock, store_sql: StoreSql
) -> None:
    session = await started(lkps)
    room = session["room_name"]
    await send(lkps, event("participant_joined", room, created=clock.now(), identity="alice"))
    await refuse_records(store_sql, "session.agent_joined", outcome="recorded")
    # Nor may the step depend on a second write to be taken back (it did: it was undone
    # after its record failed, and stayed applied, unrecorded, when the undo failed too).
    await store_sql.refuse(
        "refuse_undo",
        "UPDATE",
        "sessions",
        "OLD.agent_joined_at IS NOT NULL AND NEW.agent_joined_at IS NULL",
    )
    agent = event(
        "participant_joined", room, created=clock.now(), identity="agent-AJ_1", agent=True
    )

    refused = await send(lkps, agent)

    assert_unavailable(refused)
    view = (await read_session(lkps, session["session_id"])).json()
    assert (view["state"], view["agent_joined_at"], view["job_id"]) == ("client_joined", None, None)
    assert [r.event for r in await lifecycle_records(lkps)] == ["session.client_joined"]
    # The store takes the record again: LiveKit's retry applies the step, with it.
    await store_sql.allow("refuse_record", "audit_records")
    await store_sql.allow("refuse_undo", "sessions")
    assert (await send(lkps, agent)).json() == {"applied": True}
    view = (await read_session(lkps, session["session_id"])).json()
    assert (view["state"], view["job_id"]) == ("agent_joined", "AJ_1")
    assert [r.event for r in await lifecycle_records(lkps)] == [
        "session.client_joined",
        "session.agent_joined",
    ]
    assert (await lkps.services.audit.verify()).ok


async def test_one_refused_record_fails_its_own_webhook_only(
    lkps: Lkps, clock: FakeClock, store_sql: StoreSql
) -> None:
    """Steps are committed in batches: the store refusing one event's record must not
    fail the other events that share its batch."""
    assert (await lkps.register()).status_code == 200
    sessions = [
        (await lkps.start_session(token=lkps.user_token(f"user{index}"))).json()
        for index in range(12)
    ]
    await refuse_records(store_sql, "session.ended", outcome="recorded")
    ends = [event("room_finished", sessions[0]["room_name"], created=clock.now())] + [
        event("participant_joined", s["room_name"], created=clock.now(), identity="a")
        for s in sessions[1:]
    ]

    answers = await asyncio.gather(*(send(lkps, message) for message in ends))

    assert_unavailable(answers[0])
    assert [answer.json() for answer in answers[1:]] == [{"applied": True}] * 11
    states = [
        (await read_session(lkps, s["session_id"], auditor(lkps))).json()["state"] for s in sessions
    ]
    assert states == ["granted"] + ["client_joined"] * 11
    assert sorted(r.room_name or "" for r in await lifecycle_records(lkps)) == sorted(
        s["room_name"] for s in sessions[1:]
    )


async def test_one_step_the_store_refuses_fails_its_own_webhook_only(
    lkps: Lkps, clock: FakeClock, store_sql: StoreSql
) -> None:
    """A batch's steps of one kind are one statement on PostgreSQL: the store refusing
    one room's change fails that statement, and the batch is tried again event by
    event, so that only that room's webhook fails."""
    assert (await lkps.register()).status_code == 200
    sessions = [
        (await lkps.start_session(token=lkps.user_token(f"user{index}"))).json()
        for index in range(12)
    ]
    refused_room = sessions[5]["room_name"]
    await store_sql.refuse("refuse_step", "UPDATE", "sessions", f"NEW.room_name = '{refused_room}'")
    joins = [
        event("participant_joined", s["room_name"], created=clock.now(), identity="a")
        for s in sessions
    ]

    answers = await asyncio.gather(*(send(lkps, message) for message in joins))

    assert_unavailable(answers[5])
    assert [a.json() for i, a in enumerate(answers) if i != 5] == [{"applied": True}] * 11
    states = [
        (await read_session(lkps, s["session_id"], auditor(lkps))).json()["state"] for s in sessions
    ]
    assert states == ["client_joined"] * 5 + ["granted"] + ["client_joined"] * 6
    assert sorted(r.room_name or "" for r in await lifecycle_records(lkps)) == sorted(
        s["room_name"] for s in sessions if s["room_name"] != refused_room
    )
    await store_sql.allow("refuse_step", "sessions")
    assert (await send(lkps, joins[5])).json() == {"applied": True}


# Who may read a session.


async def test_a_session_is_readable_by_its_user_its_app_and_auditors_only(
    lkps: Lkps, clock: FakeClock
) -> None:
    session = await started(lkps)
    session_id = session["session_id"]
    assert (await read_session(lkps, session_id)).status_code == 200
    assert (await read_session(lkps, session_id, auditor(lkps))).status_code == 200
    for stranger in (
        lkps.user_token("mallory"),  # another user of the same client app
        lkps.app_token(CLIENT_A),  # the client app, but app-only: the user started it
        lkps.app_token(AGENT),
    ):
        refused = await read_session(lkps, session_id, stranger)
        assert refused.status_code == 404
        assert set(refused.json()) == {"error", "message", "request_id"}
    assert (await read_session(lkps, "no-such-session")).status_code == 404
    assert (await read_session(lkps, "x" * 5000)).status_code in (404, 414)


async def test_an_app_only_session_is_readable_by_that_app(lkps: Lkps) -> None:
    session = await started(lkps, token=lkps.app_token(CLIENT_A))
    assert (
        await read_session(lkps, session["session_id"], lkps.app_token(CLIENT_A))
    ).status_code == 200
    assert (await read_session(lkps, session["session_id"])).status_code == 404


async def test_auditors_list_sessions_by_agent_state_and_time(lkps: Lkps, clock: FakeClock) -> None:
    first = await started(lkps)
    clock.advance(60)
    second = await started(lkps)
    await send(
        lkps, event("participant_joined", second["room_name"], created=clock.now(), identity="a")
    )
    headers = {"Authorization": f"Bearer {auditor(lkps)}"}

    async def listed(**query: str) -> list[str]:
        response = await lkps.http.get("/api/sessions", params=query, headers=headers)
        assert response.status_code == 200, response.text
        return [s["session_id"] for s in response.json()["sessions"]]

    assert await listed() == [second["session_id"], first["session_id"]]
    assert await listed(agent=AGENT, state="granted") == [first["session_id"]]
    assert await listed(state="client_joined") == [second["session_id"]]
    since = (clock.now()).isoformat()
    assert await listed(since=since) == [second["session_id"]]
    assert await listed(agent="bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb") == []
    user = {"Authorization": f"Bearer {lkps.user_token()}"}
    assert (await lkps.http.get("/api/sessions", headers=user)).status_code == 403
    for bad in ({"state": "lost"}, {"since": "yesterday"}, {"agent": "x"}, {"limit": "0"}):
        refused = await lkps.http.get("/api/sessions", params=bad, headers=headers)
        assert refused.status_code == 400, bad


# The webhook's refusals: none changes a session or writes a record.


async def test_webhooks_not_signed_by_livekit_for_this_body_are_refused(
    lkps: Lkps, clock: FakeClock
) -> None:
    session = await started(lkps)
    message = event("participant_joined", session["room_name"], created=clock.now(), identity="a")
    body = body_of(message)
    forged = body.replace('"a"', '"mallory"')
    old = event("room_finished", session["room_name"], created=clock.now())
    old.created_at -= 3600
    attempts: list[tuple[str, dict[str, str]]] = [
        (body, {}),  # no signature
        (body, {"Authorization": ""}),
        (body, {"Authorization": "not-a-jwt"}),
        (
            body,
            {"Authorization": signature(body, secret="another-secret-that-is-also-long-enough")},
        ),
        (body, {"Authorization": signature(body, key="APIother")}),
        (forged, {"Authorization": signature(body)}),  # the body changed after signing
        (body_of(old), {"Authorization": signature(body_of(old))}),  # an old event replayed
        (body.encode("utf-16").decode("latin-1"), {"Authorization": signature(body)}),
    ]
    refused_before = sample("lkps_livekit_webhooks_total", event="-", result="refused")
    for content, headers in attempts:
        response = await lkps.http.post(WEBHOOK, content=content, headers=headers)
        assert response.status_code == 401, (content[:40], headers)
        assert set(response.json()) == {"error", "message", "request_id"}
    too_large = "x" * (256 * 1024 + 1)
    response = await lkps.http.post(
        WEBHOOK, content=too_large, headers={"Authorization": signature(too_large)}
    )
    assert response.status_code == 413
    garbage = "{not json"
    response = await lkps.http.post(
        WEBHOOK, content=garbage, headers={"Authorization": signature(garbage)}
    )
    assert response.status_code == 400

    assert await lifecycle_records(lkps) == []
    view = (await read_session(lkps, session["session_id"])).json()
    assert view["state"] == "granted"
    refused = sample("lkps_livekit_webhooks_total", event="-", result="refused")
    assert refused == refused_before + len(attempts) + 2


async def test_a_grant_whose_record_fails_leaves_no_session(lkps: Lkps) -> None:
    assert (await lkps.register()).status_code == 200
    await lkps.services.audit.stop()
    assert (await lkps.start_session()).status_code == 503
    await lkps.services.audit.start()
    headers = {"Authorization": f"Bearer {auditor(lkps)}"}
    assert (await lkps.http.get("/api/sessions", headers=headers)).json() == {"sessions": []}


async def test_concurrent_grants_each_get_their_session_row(lkps: Lkps) -> None:
    assert (await lkps.register()).status_code == 200
    tokens = [lkps.user_token(f"user{index}") for index in range(20)]
    answers = await asyncio.gather(*(lkps.start_session(token=token) for token in tokens))
    assert [answer.status_code for answer in answers] == [200] * 20
    headers = {"Authorization": f"Bearer {auditor(lkps)}"}
    listed = (await lkps.http.get("/api/sessions", headers=headers)).json()["sessions"]
    assert sorted(s["session_id"] for s in listed) == sorted(
        a.json()["session_id"] for a in answers
    )


async def test_a_session_row_the_store_refuses_fails_that_start_alone(
    lkps: Lkps, store_sql: StoreSql
) -> None:
    """The row rides with its grant's record, in the audit writer's shared batch: a row
    the store refuses fails its own start (503, no token, no record, no session) and
    none of the others committed beside it."""
    assert (await lkps.register()).status_code == 200
    await store_sql.refuse("refuse_session", "INSERT", "sessions", "NEW.actor_cwid LIKE '%victim%'")
    users = ["victim", *(f"user{index}" for index in range(9))]
    answers = await asyncio.gather(
        *(lkps.start_session(token=lkps.user_token(user)) for user in users)
    )
    refused, *granted = answers
    assert refused.status_code == 503 and "participant_token" not in refused.json()
    assert [answer.status_code for answer in granted] == [200] * 9
    headers = {"Authorization": f"Bearer {auditor(lkps)}"}
    listed = (await lkps.http.get("/api/sessions", headers=headers)).json()["sessions"]
    assert sorted(s["session_id"] for s in listed) == sorted(
        a.json()["session_id"] for a in granted
    )
    starts = [r for r in await lkps.audit_records() if r.event == "session.start"]
    assert [r.outcome for r in starts] == ["granted"] * 9
    assert not any("victim" in (r.actor_cwid or "") for r in starts)
    assert (await lkps.services.audit.verify()).ok
    await store_sql.allow("refuse_session", "sessions")
    assert (await lkps.start_session(token=lkps.user_token("victim"))).status_code == 200


# Values a signed body may carry where an event has something else: LiveKit signs what it
# sends, but LKPS must not trust its shape (a schema fuzzer cannot sign what it sends, so
# the webhook is fuzzed here, field by field).
HOSTILE_VALUES: tuple[Any, ...] = (
    None,
    True,
    -1,
    2**70,
    1.5e308,
    "",
    "x" * 5000,
    "\u0000\ud7ff\U0010ffff",
    [],
    [1, "a", None],
    {},
    {"nested": {"deeper": [{}]}},
)


def mutations(document: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """Every copy of `document` with one field (at any depth) replaced by each hostile
    value, or removed."""
    if not isinstance(document, dict):
        return
    for name, value in document.items():
        where = "/".join((*path, name))
        for hostile in HOSTILE_VALUES:
            yield where, {**document, name: hostile}
        yield where + " (removed)", {k: v for k, v in document.items() if k != name}
        for inner_where, inner in mutations(value, (*path, name)):
            yield inner_where, {**document, name: inner}


async def test_signed_events_of_any_shape_are_answered_never_failed(
    lkps: Lkps, clock: FakeClock
) -> None:
    session = await started(lkps)
    room = session["room_name"]
    documents = [
        json.loads(body_of(event(kind, room, created=clock.now(), identity="alice")))
        for kind in ("participant_joined", "room_finished")
    ]
    seen: dict[int, int] = {}
    for document in documents:
        for where, mutated in mutations(document):
            body = json.dumps(mutated)
            response = await lkps.http.post(
                WEBHOOK, content=body, headers={"Authorization": signature(body)}
            )
            # An event LKPS cannot date is refused like an old one: 401.
            allowed = (200, 400, 401) if where.startswith("createdAt") else (200, 400)
            assert response.status_code in allowed, (where, body[:200], response.text)
            if response.status_code == 400:
                assert set(response.json()) == {"error", "message", "request_id"}
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
    assert seen.get(400) and seen.get(200)  # both kinds of answer were exercised
    assert (await lkps.services.audit.verify()).ok
