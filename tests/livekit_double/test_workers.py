"""The `/agent` protocol with hand-driven workers: registration, status, the
availability -> assignment exchange, worker choice, dropped jobs, closed sockets."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import httpx
import pytest
from google.protobuf.json_format import MessageToJson, Parse
from livekit import api
from livekit.protocol import agent, agent_dispatch
from livekit.protocol import room as room_pb

from lkps_testkit.livekit import LiveKitDouble
from tests.livekit_double.fake_worker import FakeWorker

pytestmark = pytest.mark.e2e


def worker_token(livekit: LiveKitDouble, **options: Any) -> str:
    return livekit.token(grants=api.VideoGrants(agent=True), **options)


def room_with(
    livekit: LiveKitDouble, agent_name: str, metadata: str = "", room: str = "demo"
) -> str:
    """A participant token whose room dispatches `agent_name`."""
    dispatch = agent_dispatch.RoomAgentDispatch(agent_name=agent_name, metadata=metadata)
    config = room_pb.RoomConfiguration(agents=[dispatch])
    return livekit.token("alice", room=room, room_config=config)


async def test_registration_and_pings(livekit: LiveKitDouble) -> None:
    async with FakeWorker(livekit, worker_token(livekit)) as worker:
        assert worker.register_response is not None
        assert worker.register_response.server_info.agent_protocol == 1
        [record] = livekit.workers("helper")
        assert (record.id, record.job_type, record.version) == (worker.worker_id, "JT_ROOM", "fake")
        assert record.claims["video"] == {
            "agent": True,
            "canPublish": True,
            "canSubscribe": True,
            "canPublishData": True,
        }

        await worker.send(agent.WorkerMessage(ping=agent.WorkerPing(timestamp=1234)))
        pong = await worker.receive()
        assert pong.pong.last_timestamp == 1234

        await worker.report(load=0.5, status=agent.WS_FULL)
        await livekit.wait_until_async(lambda: livekit.workers("helper")[0].status == "WS_FULL")
        assert livekit.workers("helper")[0].load == 0.5
    await livekit.wait_until_async(lambda: not livekit.workers())
    [gone] = livekit.workers(connected_only=False)
    assert gone.disconnect_reason == "closed by the worker"


async def test_a_message_before_register_ends_the_connection(livekit: LiveKitDouble) -> None:
    worker = await FakeWorker(livekit, worker_token(livekit)).connect(register=False)
    try:
        await worker.send(agent.WorkerMessage(update_job=agent.UpdateJobStatus(job_id="x")))
        await worker.wait_closed()
    finally:
        await worker.close()
    await livekit.wait_until_async(lambda: not livekit.workers())
    [record] = livekit.workers(connected_only=False)
    assert not record.registered
    assert record.disconnect_reason == "protocol error: update_job before register"


async def test_a_job_is_offered_then_assigned_with_a_job_token(livekit: LiveKitDouble) -> None:
    async with FakeWorker(livekit, worker_token(livekit)) as worker:
        await livekit.join_async(room_with(livekit, "helper", '{"topic": "billing"}'))
        offer = await worker.next_offer()
        assert (offer.job.agent_name, offer.job.metadata) == ("helper", '{"topic": "billing"}')
        assert (offer.job.room.name, offer.job.type) == ("demo", agent.JT_ROOM)
        assert offer.job.state.worker_id == worker.worker_id

        await worker.answer(offer, identity="helper-bot")
        message = await worker.receive()
        assignment = message.assignment
        assert assignment.job.id == offer.job.id
        assert assignment.url == livekit.url
        claims = api.TokenVerifier(livekit.api_key, livekit.api_secret).verify(assignment.token)
        assert (claims.identity, claims.kind, claims.name) == ("helper-bot", "agent", "Helper")
        assert claims.video is not None
        assert (claims.video.room_join, claims.video.agent, claims.video.room) == (
            True,
            True,
            "demo",
        )
        assert claims.attributes == {"role": "helper", "lk.agent_name": "helper"}

        update = agent.UpdateJobStatus(job_id=offer.job.id, status=agent.JS_SUCCESS)
        await worker.send(agent.WorkerMessage(update_job=update))
        job = await livekit.wait_for_job_async("helper", status="JS_SUCCESS")
    assert (job.participant_identity, job.worker_id) == ("helper-bot", worker.worker_id)
    assert job.status_updates == ("JS_SUCCESS",)
    exchange = [(m.direction, m.type) for m in livekit.worker_messages(worker.worker_id)]
    assert exchange == [
        ("in", "register"),
        ("out", "register"),
        ("out", "availability"),
        ("in", "availability"),
        ("out", "assignment"),
        ("in", "update_job"),
    ]


async def test_the_job_token_uses_the_workers_key_and_a_default_identity() -> None:
    with LiveKitDouble(extra_keys={"second-key": "second-secret-of-comfortable-length"}) as livekit:
        token = worker_token(
            livekit, api_key="second-key", api_secret="second-secret-of-comfortable-length"
        )
        async with FakeWorker(livekit, token) as worker:
            await livekit.join_async(room_with(livekit, "helper"))
            offer = await worker.next_offer()
            await worker.answer(offer, identity="")
            assignment = (await worker.receive()).assignment
        verifier = api.TokenVerifier("second-key", "second-secret-of-comfortable-length")
        assert verifier.verify(assignment.token).identity == f"agent-{offer.job.id}"


async def test_a_refused_job_goes_to_the_next_worker(livekit: LiveKitDouble) -> None:
    async with (
        FakeWorker(livekit, worker_token(livekit)) as refusing,
        FakeWorker(livekit, worker_token(livekit)) as accepting,
    ):
        await accepting.report(load=0.5)  # so that the idle one is asked first
        await livekit.wait_until_async(lambda: max(w.load for w in livekit.workers()) == 0.5)
        await livekit.join_async(room_with(livekit, "helper"))
        offer = await refusing.next_offer()
        await refusing.answer(offer, available=False)
        retry = await accepting.next_offer()
        assert retry.job.id == offer.job.id
        await accepting.answer(retry, identity="bot")
        await accepting.receive()  # the assignment
        job = await livekit.wait_for_job_async("helper")
    assert job.worker_id == accepting.worker_id
    assert livekit.dropped_dispatches == []


async def test_a_job_every_worker_refuses_is_dropped(livekit: LiveKitDouble) -> None:
    async with FakeWorker(livekit, worker_token(livekit)) as worker:
        await livekit.join_async(room_with(livekit, "helper", "m"))
        await worker.answer(await worker.next_offer(), available=False)
        await livekit.wait_until_async(lambda: livekit.dropped_dispatches)
    [dropped] = livekit.dropped_dispatches
    assert (dropped.agent_name, dropped.metadata, dropped.reason) == (
        "helper",
        "m",
        "no worker available",
    )
    assert dropped.workers_tried == (worker.worker_id,)
    assert livekit.jobs() == []


async def test_a_job_nobody_answers_is_dropped_after_the_timeout() -> None:
    with LiveKitDouble(assignment_timeout=0.3) as livekit:
        async with FakeWorker(livekit, worker_token(livekit)) as worker:
            await livekit.join_async(room_with(livekit, "helper"))
            await worker.next_offer()  # and never answer
            await livekit.wait_until_async(lambda: livekit.dropped_dispatches)
        assert livekit.dropped_dispatches[0].reason == "availability timeout"


async def test_without_a_worker_the_job_is_dropped_silently(livekit: LiveKitDouble) -> None:
    async with FakeWorker(livekit, worker_token(livekit), agent_name="other") as other:
        participant = await livekit.join_async(room_with(livekit, "helper", '{"a": 1}'))
        assert participant.identity == "alice"  # the join itself succeeds
        await livekit.wait_until_async(lambda: livekit.dropped_dispatches)
        # The worker of another agent name is never asked.
        assert [m.type for m in livekit.worker_messages(other.worker_id)] == [
            "register",
            "register",
        ]
    [dropped] = livekit.dropped_dispatches
    assert (dropped.agent_name, dropped.room, dropped.reason) == (
        "helper",
        "demo",
        "no worker registered for the agent name",
    )


async def test_the_least_loaded_available_worker_gets_the_job(livekit: LiveKitDouble) -> None:
    async with (
        FakeWorker(livekit, worker_token(livekit)) as busy,
        FakeWorker(livekit, worker_token(livekit)) as idle,
        FakeWorker(livekit, worker_token(livekit)) as full,
    ):
        await busy.report(load=0.6)
        await idle.report(load=0.1)
        await full.report(load=0.0, status=agent.WS_FULL)
        await livekit.wait_until_async(
            lambda: sorted(round(w.load, 3) for w in livekit.workers("helper")) == [0.0, 0.1, 0.6]
        )
        await livekit.join_async(room_with(livekit, "helper"))
        offer = await idle.next_offer()
        assert offer.job.state.worker_id == idle.worker_id


async def test_equal_workers_take_turns(livekit: LiveKitDouble) -> None:
    async with (
        FakeWorker(livekit, worker_token(livekit)) as one,
        FakeWorker(livekit, worker_token(livekit)) as two,
    ):
        for room in ("r1", "r2", "r3", "r4"):
            await livekit.join_async(room_with(livekit, "helper", room=room))
        offers = await livekit.wait_until_async(
            lambda: offered_to(livekit) if len(offered_to(livekit)) == 4 else None
        )
        assert offers.count(one.worker_id) == offers.count(two.worker_id) == 2


def offered_to(livekit: LiveKitDouble) -> list[str]:
    """The workers each availability request went to, in order."""
    messages = livekit.worker_messages()
    return [m.worker_id for m in messages if (m.direction, m.type) == ("out", "availability")]


async def test_deleting_a_dispatch_terminates_its_job(
    livekit: LiveKitDouble, lkapi: api.LiveKitAPI
) -> None:
    async with FakeWorker(livekit, worker_token(livekit)) as worker:
        await livekit.join_async(livekit.token("alice", room="demo"))
        dispatch = await lkapi.agent_dispatch.create_dispatch(
            agent_dispatch.CreateAgentDispatchRequest(agent_name="helper", room="demo")
        )
        offer = await worker.next_offer()
        assert offer.job.dispatch_id == dispatch.id
        await worker.answer(offer, identity="bot")
        await worker.receive()
        [listed] = [
            d for d in await lkapi.agent_dispatch.list_dispatch("demo") if d.id == dispatch.id
        ]
        assert [j.id for j in listed.state.jobs] == [offer.job.id]

        await lkapi.agent_dispatch.delete_dispatch(dispatch.id, "demo")
        termination = await worker.receive()
        assert termination.termination.job_id == offer.job.id


async def test_closing_workers_by_agent_name(livekit: LiveKitDouble) -> None:
    async with (
        FakeWorker(livekit, worker_token(livekit)) as helper,
        FakeWorker(livekit, worker_token(livekit), agent_name="other") as other,
    ):
        assert await livekit.close_workers_async("helper") == 1
        await helper.wait_closed()
        await livekit.wait_until_async(lambda: len(livekit.workers()) == 1)
        assert [w.id for w in livekit.workers()] == [other.worker_id]
    [closed] = [w for w in livekit.workers(connected_only=False) if w.id == helper.worker_id]
    assert closed.disconnect_reason == "closed by the test"


async def test_a_worker_is_disconnected_when_its_token_expires(livekit: LiveKitDouble) -> None:
    short = worker_token(livekit, ttl=datetime.timedelta(seconds=1))
    async with FakeWorker(livekit, short) as worker:
        await worker.wait_closed()
    await livekit.wait_until_async(lambda: not livekit.workers())
    [record] = livekit.workers(connected_only=False)
    assert record.disconnect_reason == "token expired"
    assert record.disconnected_at is not None
    assert record.disconnected_at >= record.token_expires_at


async def test_token_expiry_can_be_left_alone() -> None:
    with LiveKitDouble(close_workers_on_token_expiry=False) as livekit:
        short = worker_token(livekit, ttl=datetime.timedelta(seconds=1))
        async with FakeWorker(livekit, short):
            await asyncio.sleep(1.5)
            assert len(livekit.workers()) == 1


async def test_json_text_frames_get_json_answers(livekit: LiveKitDouble) -> None:
    worker = await FakeWorker(livekit, worker_token(livekit)).connect(register=False)
    try:
        assert worker.ws is not None
        register = agent.WorkerMessage(register=agent.RegisterWorkerRequest(agent_name="json"))
        await worker.ws.send_str(MessageToJson(register))
        frame = await worker.ws.receive(timeout=5)
        answer = Parse(frame.data, agent.ServerMessage())
        assert answer.register.worker_id == livekit.workers("json")[0].id
    finally:
        await worker.close()


async def test_deleting_the_room_terminates_its_jobs(
    livekit: LiveKitDouble, lkapi: api.LiveKitAPI
) -> None:
    async with FakeWorker(livekit, worker_token(livekit)) as worker:
        await livekit.join_async(room_with(livekit, "helper"))
        offer = await worker.next_offer()
        await worker.answer(offer, identity="bot")
        await worker.receive()
        await lkapi.room.delete_room(room_pb.DeleteRoomRequest(room="demo"))
        termination = await worker.receive()
    assert termination.termination.job_id == offer.job.id
    [alice] = livekit.participants("demo", active_only=False)
    assert alice.disconnect_reason == "ROOM_DELETED"


async def test_workers_can_be_closed_over_http(livekit: LiveKitDouble) -> None:
    async with FakeWorker(livekit, worker_token(livekit)) as worker:
        async with httpx.AsyncClient(base_url=livekit.http_url) as http:
            other = await http.post("/_double/close-workers", json={"agent_name": "other"})
            assert other.json() == {"closed": 0}
            closed = await http.post("/_double/close-workers", json={})
            assert closed.json() == {"closed": 1}
        await worker.wait_closed()
