"""A real `livekit.agents.AgentServer` against the double: it registers, receives the
dispatch with its metadata, its job process reaches `/rtc`, and it reconnects when its
socket is closed or its token expires."""

from __future__ import annotations

import asyncio
import datetime
import threading
from typing import Any

import pytest
from livekit import api
from livekit.agents import JobContext
from livekit.protocol import agent_dispatch
from livekit.protocol import room as room_pb

from lkps_agent import job_count_load
from lkps_testkit.livekit import LiveKitDouble
from tests.livekit_double.conftest import StartWorker

pytestmark = pytest.mark.e2e


class Seen:
    """What the entrypoint saw, for the test to assert on."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []
        self.connect_errors: list[str] = []

    async def entrypoint(self, ctx: JobContext) -> None:
        claims = ctx.token_claims()
        self.jobs.append(
            {
                "job_id": ctx.job.id,
                "metadata": ctx.job.metadata,
                "room": ctx.job.room.name,
                "identity": claims.identity,
                "kind": claims.kind,
                "video": claims.video,
            }
        )
        ctx.shutdown("seen")


async def test_a_dispatch_reaches_the_entrypoint_with_its_metadata(
    livekit: LiveKitDouble, start_worker: StartWorker
) -> None:
    seen = Seen()
    await start_worker("helper", seen.entrypoint)
    config = room_pb.RoomConfiguration(
        agents=[agent_dispatch.RoomAgentDispatch(agent_name="helper", metadata='{"ticket": 42}')]
    )
    await livekit.join_async(livekit.token("alice", room="support", room_config=config))

    job = await livekit.wait_for_job_async("helper", status="JS_SUCCESS")
    await livekit.wait_until_async(lambda: seen.jobs)
    [entry] = seen.jobs
    assert (entry["job_id"], entry["metadata"], entry["room"]) == (
        job.id,
        '{"ticket": 42}',
        "support",
    )
    # The job token is the one the double minted for the worker's answer.
    assert (entry["identity"], entry["kind"]) == (job.participant_identity, "agent")
    assert entry["identity"] == f"agent-{job.id}"  # the SDK's default identity
    assert (entry["video"].room_join, entry["video"].agent, entry["video"].room) == (
        True,
        True,
        "support",
    )

    exchange = [
        (m.direction, m.type) for m in livekit.worker_messages(job.worker_id) if m.job_id == job.id
    ]
    assert exchange[:3] == [("out", "availability"), ("in", "availability"), ("out", "assignment")]
    assert ("in", "update_job") in exchange[3:]
    assert job.status_updates[-1] == "JS_SUCCESS"


async def test_the_job_process_joins_the_room_over_rtc(
    livekit: LiveKitDouble, start_worker: StartWorker
) -> None:
    errors: list[str] = []

    async def entrypoint(ctx: JobContext) -> None:
        try:
            await ctx.connect()
        except Exception as error:  # the double ends every signalling session
            errors.append(type(error).__name__)
        ctx.shutdown("done")

    await start_worker("helper", entrypoint)
    config = room_pb.RoomConfiguration(
        agents=[agent_dispatch.RoomAgentDispatch(agent_name="helper")]
    )
    await livekit.join_async(livekit.token("alice", room="support", room_config=config))
    job = await livekit.wait_for_job_async("helper")

    def agent_joins() -> list[Any]:
        joined = livekit.participants("support", active_only=False)
        return [p for p in joined if p.identity == job.participant_identity]

    [first, *_] = await livekit.wait_until_async(agent_joins)
    assert (first.kind, first.via, first.dependent, first.sdk) == ("AGENT", "rtc", True, "PYTHON")
    assert first.attributes["lk.agent_name"] == "helper"
    await livekit.wait_until_async(lambda: errors, timeout=15)
    assert errors == ["ConnectError"]
    # The agent never counted as a participant, and alice is still there.
    assert [p.identity for p in livekit.participants("support")] == ["alice"]


async def test_a_dispatch_created_through_the_api(
    livekit: LiveKitDouble, start_worker: StartWorker, lkapi: api.LiveKitAPI
) -> None:
    seen = Seen()
    await start_worker("helper", seen.entrypoint)
    dispatch = await lkapi.agent_dispatch.create_dispatch(
        agent_dispatch.CreateAgentDispatchRequest(agent_name="helper", room="ops", metadata="m")
    )
    job = await livekit.wait_for_job_async("helper")
    assert (job.dispatch_id, job.metadata, job.room) == (dispatch.id, "m", "ops")
    await livekit.wait_until_async(lambda: seen.jobs)
    assert seen.jobs[0]["metadata"] == "m"


async def test_a_missing_agent_is_dropped_while_others_are_untouched(
    livekit: LiveKitDouble, start_worker: StartWorker
) -> None:
    seen = Seen()
    await start_worker("helper", seen.entrypoint)
    config = room_pb.RoomConfiguration(
        agents=[agent_dispatch.RoomAgentDispatch(agent_name="absent")]
    )
    participant = await livekit.join_async(
        livekit.token("alice", room="support", room_config=config)
    )
    assert participant.room == "support"
    [dropped] = await livekit.wait_until_async(lambda: livekit.dropped_dispatches)
    assert (dropped.agent_name, dropped.reason) == (
        "absent",
        "no worker registered for the agent name",
    )
    await asyncio.sleep(0.2)
    assert livekit.jobs() == [] and seen.jobs == []


async def test_a_closed_socket_makes_the_worker_reconnect(
    livekit: LiveKitDouble, start_worker: StartWorker
) -> None:
    await start_worker("helper", Seen().entrypoint)
    [before] = livekit.workers("helper")
    assert await livekit.close_workers_async("helper") == 1

    def reconnected() -> list[Any]:
        return [w for w in livekit.workers("helper") if w.registered and w.id != before.id]

    [after] = await livekit.wait_until_async(reconnected)
    [closed] = [w for w in livekit.workers("helper", connected_only=False) if w.id == before.id]
    assert closed.disconnect_reason == "closed by the test"
    assert after.connected_at >= (closed.disconnected_at or 0)


async def test_an_expired_token_makes_the_worker_reconnect_with_a_fresh_one(
    livekit: LiveKitDouble, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK mints its worker token with livekit-api's default lifetime.
    monkeypatch.setattr("livekit.api.access_token.DEFAULT_TTL", datetime.timedelta(seconds=2))
    await start_worker("helper", Seen().entrypoint)
    [first] = livekit.workers("helper")

    def reconnected() -> list[Any]:
        return [w for w in livekit.workers("helper") if w.registered and w.id != first.id]

    [second] = await livekit.wait_until_async(reconnected, timeout=10)
    [expired] = [w for w in livekit.workers(connected_only=False) if w.id == first.id]
    assert expired.disconnect_reason == "token expired"
    assert second.token_fingerprint != first.token_fingerprint
    assert second.token_expires_at > first.token_expires_at
    assert second.claims["video"]["agent"] is True


async def test_the_worker_reports_the_load_its_load_fnc_returns(
    livekit: LiveKitDouble, start_worker: StartWorker
) -> None:
    """`job_count_load` (lkps_agent), in a real worker: LiveKit reads the worker's own
    jobs as its load, not the machine's CPU, whatever else the machine runs."""
    release = threading.Event()

    async def entrypoint(ctx: JobContext) -> None:
        await asyncio.to_thread(release.wait, 60)  # the job runs until the test lets it go
        ctx.shutdown("released")

    await start_worker("helper", entrypoint, load_fnc=job_count_load(2))

    def reported(load: float, jobs: int) -> list[Any]:
        return [
            w
            for w in livekit.workers("helper")
            if w.load == pytest.approx(load) and w.job_count == jobs and w.status == "WS_AVAILABLE"
        ]

    try:
        for room, (load, jobs) in (("first", (0.35, 1)), ("second", (1.0, 2))):
            config = room_pb.RoomConfiguration(
                agents=[agent_dispatch.RoomAgentDispatch(agent_name="helper")]
            )
            await livekit.join_async(livekit.token("alice", room=room, room_config=config))
            await livekit.wait_for_job_async("helper", room=room, status="JS_RUNNING")
            # The worker reports its status every 2.5 s.
            await livekit.wait_until_async(lambda: reported(load, jobs), timeout=15)  # noqa: B023
    finally:
        release.set()
    await livekit.wait_until_async(lambda: reported(0.0, 0), timeout=15)
