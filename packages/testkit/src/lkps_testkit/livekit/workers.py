"""Agent workers on `/agent`, and handing them jobs (livekit-server `pkg/agent`).

The exchange is LiveKit's: the worker sends `register` and gets `RegisterWorkerResponse`
(its id and the server's info); it then reports its status and load with
`update_worker` and pings. For a job the server sends an `availability` request, waits
for the worker's `AvailabilityResponse`, and, if the worker accepts, sends the
`assignment`: the job, the server's URL and a token for the job's participant, minted
with the API key the worker connected with. The worker reports the job's status with
`update_job`.

Choosing a worker: LiveKit picks at random, weighted by spare capacity, among the
available workers of the agent name; the double picks the least loaded, taking turns
between equals, so that tests are deterministic. A worker that refuses or disconnects
is skipped and the next one asked, as LiveKit does; when none is left the job is
dropped without telling anyone, which the double records in `dropped_dispatches`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from google.protobuf.json_format import MessageToJson, Parse, ParseError
from google.protobuf.message import DecodeError, Message
from livekit.protocol import agent, models

from lkps_testkit.livekit.background import Background, logger
from lkps_testkit.livekit.records import (
    JOB_PREFIX,
    WORKER_PREFIX,
    DispatchRecord,
    DroppedDispatch,
    JobRecord,
    WorkerMessage,
    WorkerRecord,
    new_id,
)
from lkps_testkit.livekit.state import DoubleState
from lkps_testkit.livekit.tokens import KeyRing, VerifiedToken, default_permissions, mint_job_token

REGISTER_TIMEOUT = 10.0  # pkg/agent RegisterTimeout
AGENT_NAME_ATTRIBUTE = "lk.agent_name"
AGENT_PROTOCOL = 1
# Messages that would drown the log without telling a test anything.
_UNLOGGED = {"ping", "pong", "update_worker"}

DROP_NO_WORKER = "no worker registered for the agent name"
DROP_NONE_AVAILABLE = "no worker available"
DROP_TIMEOUT = "availability timeout"


class WorkerClosed(Exception):
    pass


class WorkerUnavailable(Exception):
    pass


class WorkerSession:
    """One worker socket, from registration to disconnection (LiveKit's `Worker`)."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        token: VerifiedToken,
        *,
        registry: WorkerRegistry,
    ) -> None:
        self.id = new_id(WORKER_PREFIX)
        self._ws = ws
        self._registry = registry
        self._state = registry.state
        self._send_lock = asyncio.Lock()
        self._json = False  # LiveKit answers in JSON while the worker writes JSON
        self._pending: dict[str, asyncio.Future[agent.AvailabilityResponse]] = {}
        self._close_reason: str | None = None
        self.permissions = default_permissions()
        self.job_type: agent.JobType = agent.JobType.JT_ROOM
        with self._state.mutate() as tables:
            tables.workers[self.id] = WorkerRecord(
                id=self.id,
                api_key=token.api_key,
                claims=dict(token.claims),
                token_fingerprint=token.fingerprint,
                token_expires_at=token.expires_at,
                connected_at=time.time(),
            )

    @property
    def record(self) -> WorkerRecord:
        return self._state.read(lambda t: t.workers[self.id])

    def _update(self, **changes: Any) -> None:
        with self._state.mutate() as tables:
            tables.workers[self.id] = replace(tables.workers[self.id], **changes)

    def _log(self, direction: str, kind: str, job_id: str = "") -> None:
        if kind in _UNLOGGED:
            return
        with self._state.mutate() as tables:
            tables.messages.append(WorkerMessage(self.id, direction, kind, time.time(), job_id))

    # Wire.

    async def send(self, message: agent.ServerMessage, *, job_id: str = "") -> None:
        async with self._send_lock:
            if self._json:
                await self._ws.send_str(MessageToJson(message))
            else:
                await self._ws.send_bytes(message.SerializeToString())
        self._log("out", message.WhichOneof("message") or "", job_id)

    async def receive(self) -> agent.WorkerMessage | None:
        """The next message, or None once the socket is closed."""
        while True:
            frame = await self._ws.receive()
            if frame.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return None
            if frame.type == WSMsgType.ERROR:
                self._close_reason = self._close_reason or f"socket error: {frame.data}"
                return None
            message = agent.WorkerMessage()
            try:
                if frame.type == WSMsgType.BINARY:
                    self._json = False
                    message.ParseFromString(frame.data)
                elif frame.type == WSMsgType.TEXT:
                    self._json = True
                    Parse(frame.data, message)
                else:
                    continue
            except (DecodeError, ParseError):
                await self.close("protocol error: undecodable message")
                return None
            kind = message.WhichOneof("message") or ""
            self._log("in", kind, _job_id_of(message))
            return message

    async def close(self, reason: str) -> None:
        self._close_reason = self._close_reason or reason
        await self._ws.close(code=WSCloseCode.GOING_AWAY, message=reason.encode()[:120])

    # Protocol.

    async def handshake(self) -> bool:
        """Wait for `register` (answering pings meanwhile), then acknowledge it."""
        try:
            async with asyncio.timeout(REGISTER_TIMEOUT):
                while True:
                    message = await self.receive()
                    if message is None:
                        return False
                    kind = message.WhichOneof("message")
                    if kind == "ping":
                        await self._pong(message.ping)
                    elif kind == "register":
                        return await self._register(message.register)
                    else:
                        await self.close(f"protocol error: {kind} before register")
                        return False
        except TimeoutError:
            await self.close("register timeout")
            return False

    async def _register(self, request: agent.RegisterWorkerRequest) -> bool:
        if request.type not in agent.JobType.values():
            await self.close("protocol error: unknown job type")
            return False
        if request.HasField("allowed_permissions"):
            self.permissions = request.allowed_permissions
        self.job_type = request.type
        self._update(
            agent_name=request.agent_name,
            job_type=agent.JobType.Name(request.type),
            namespace=request.namespace,
            deployment=request.deployment,
            version=request.version,
            registered_at=time.time(),
        )
        response = agent.RegisterWorkerResponse(
            worker_id=self.id, server_info=self._registry.server_info
        )
        await self.send(agent.ServerMessage(register=response))
        return True

    async def serve(self) -> None:
        """Handle the worker's messages until the socket closes."""
        while (message := await self.receive()) is not None:
            kind = message.WhichOneof("message")
            if kind == "ping":
                await self._pong(message.ping)
            elif kind == "update_worker":
                self._update_worker(message.update_worker)
            elif kind == "availability":
                future = self._pending.get(message.availability.job_id)
                if future is not None and not future.done():
                    future.set_result(message.availability)
            elif kind == "update_job":
                self._registry.update_job(self.id, message.update_job)
            elif kind in ("migrate_job", "simulate_job"):
                continue  # LiveKit OSS ignores migrations; simulations are out of scope
            else:
                await self.close(f"protocol error: unexpected {kind}")
                return

    async def _pong(self, ping: agent.WorkerPing) -> None:
        pong = agent.WorkerPong(last_timestamp=ping.timestamp, timestamp=int(time.time() * 1000))
        await self.send(agent.ServerMessage(pong=pong))

    def _update_worker(self, update: agent.UpdateWorkerStatus) -> None:
        changes: dict[str, Any] = {"load": update.load, "job_count": update.job_count}
        if update.HasField("status"):
            changes["status"] = agent.WorkerStatus.Name(update.status)
        self._update(**changes)

    def finish(self) -> None:
        """Record the disconnection and fail what was waiting on this worker."""
        reason = self._close_reason or "closed by the worker"
        self._update(disconnected_at=time.time(), disconnect_reason=reason)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(WorkerClosed())

    # Jobs.

    async def offer(self, job: agent.Job) -> agent.AvailabilityResponse:
        """Ask whether the worker takes `job`; WorkerUnavailable if it says no."""
        future: asyncio.Future[agent.AvailabilityResponse] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[job.id] = future
        try:
            await self.send(
                agent.ServerMessage(availability=agent.AvailabilityRequest(job=job)),
                job_id=job.id,
            )
            response = await future
        except ConnectionResetError:
            raise WorkerClosed() from None
        finally:
            self._pending.pop(job.id, None)
        if not response.available and not response.terminate:
            raise WorkerUnavailable()
        return response

    async def assign(self, job: agent.Job, url: str, token: str) -> None:
        assignment = agent.JobAssignment(job=job, url=url, token=token)
        try:
            await self.send(agent.ServerMessage(assignment=assignment), job_id=job.id)
        except ConnectionResetError:
            raise WorkerClosed() from None

    async def terminate(self, job_id: str) -> None:
        termination = agent.JobTermination(job_id=job_id)
        await self.send(agent.ServerMessage(termination=termination), job_id=job_id)


class WorkerRegistry:
    """The registered workers, and job launching (LiveKit's `AgentHandler`)."""

    def __init__(
        self,
        state: DoubleState,
        keys: KeyRing,
        background: Background,
        *,
        url: Callable[[], str],
        assignment_timeout: float,
        close_on_token_expiry: bool,
    ) -> None:
        self.state = state
        self._keys = keys
        self._background = background
        self._url = url
        self._assignment_timeout = assignment_timeout
        self._close_on_token_expiry = close_on_token_expiry
        self._sessions: dict[str, WorkerSession] = {}  # registered, by id, in order
        self._turn = 0
        self.server_info = models.ServerInfo(
            edition=models.ServerInfo.Standard,
            version="lkps-testkit-double",
            protocol=16,
            agent_protocol=AGENT_PROTOCOL,
            node_id="ND_double",
        )

    async def serve(self, ws: web.WebSocketResponse, token: VerifiedToken) -> None:
        """Run one worker connection to its end (the `/agent` handler's body)."""
        session = WorkerSession(ws, token, registry=self)
        expiry: asyncio.TimerHandle | None = None
        try:
            if not await session.handshake():
                return
            self._sessions[session.id] = session
            if self._close_on_token_expiry:
                delay = max(0.0, token.expires_at - time.time())
                expiry = asyncio.get_running_loop().call_later(
                    delay, lambda: self._background.spawn(session.close("token expired"))
                )
            await session.serve()
        finally:
            if expiry is not None:
                expiry.cancel()
            self._sessions.pop(session.id, None)
            session.finish()

    async def close(self, agent_name: str | None = None, reason: str = "closed by the test") -> int:
        sessions = [
            s
            for s in list(self._sessions.values())
            if agent_name is None or s.record.agent_name == agent_name
        ]
        await asyncio.gather(*(s.close(reason) for s in sessions), return_exceptions=True)
        return len(sessions)

    def _candidates(self, dispatch: DispatchRecord, job_type: agent.JobType) -> list[WorkerSession]:
        return [
            s
            for s in self._sessions.values()
            if s.job_type == job_type
            and s.record.agent_name == dispatch.agent_name
            and s.record.deployment == dispatch.deployment
        ]

    def _select(self, candidates: list[WorkerSession], tried: list[str]) -> WorkerSession | None:
        records = [
            (s, s.record) for s in candidates if s.id not in tried and s.id in self._sessions
        ]
        available = [(s, r) for s, r in records if r.status == "WS_AVAILABLE"]
        if not available:
            return None
        lowest = min(r.load for _, r in available)
        ties = [s for s, r in available if r.load == lowest]
        self._turn += 1
        return ties[self._turn % len(ties)]

    async def launch(
        self,
        dispatch: DispatchRecord,
        room: models.Room,
        job_type: agent.JobType = agent.JobType.JT_ROOM,
    ) -> JobRecord | None:
        """Find a worker for one job of `dispatch` and assign it, or drop the job."""
        job = agent.Job(
            id=new_id(JOB_PREFIX),
            dispatch_id=dispatch.id,
            type=job_type,
            room=room,
            agent_name=dispatch.agent_name,
            metadata=dispatch.metadata,
            deployment=dispatch.deployment,
            attributes=dict(dispatch.attributes),
        )
        candidates = self._candidates(dispatch, job_type)
        if not candidates:
            # LiveKit does not even send the request when no worker has the agent name.
            # The room's implicit dispatch reaching nobody is normal, not a drop.
            if not dispatch.implicit:
                self._drop(dispatch, DROP_NO_WORKER, [])
            return None
        tried: list[str] = []
        while (session := self._select(candidates, tried)) is not None:
            tried.append(session.id)
            try:
                return await self._assign(session, job, dispatch)
            except (WorkerUnavailable, WorkerClosed):
                continue
            except TimeoutError:
                self._drop(dispatch, DROP_TIMEOUT, tried)
                return None
        self._drop(dispatch, DROP_NONE_AVAILABLE, tried)
        return None

    async def _assign(
        self, session: WorkerSession, job: agent.Job, dispatch: DispatchRecord
    ) -> JobRecord:
        offered = agent.Job()
        offered.CopyFrom(job)
        now_ns = time.time_ns()
        offered.state.CopyFrom(
            agent.JobState(
                status=agent.JobStatus.JS_RUNNING,
                worker_id=session.id,
                started_at=now_ns,
                updated_at=now_ns,
            )
        )
        async with asyncio.timeout(self._assignment_timeout):
            response = await session.offer(offered)
        worker = session.record
        identity = response.participant_identity or f"agent-{job.id}"
        record = JobRecord(
            id=job.id,
            dispatch_id=dispatch.id,
            agent_name=dispatch.agent_name,
            room=job.room.name,
            room_sid=job.room.sid,
            metadata=job.metadata,
            worker_id=session.id,
            participant_identity=identity,
            participant_name=response.participant_name,
            assigned_at=time.time(),
            # A worker that already runs this job elsewhere answers `terminate`:
            # LiveKit counts the job as done and sends no assignment.
            status="JS_SUCCESS" if response.terminate else "JS_RUNNING",
        )
        # Recorded before the assignment leaves, so that no `update_job` can outrun it.
        with self.state.mutate() as tables:
            tables.jobs[record.id] = record
        if response.terminate:
            return record
        offered.state.participant_identity = identity
        attributes = dict(response.participant_attributes)
        attributes[AGENT_NAME_ATTRIBUTE] = worker.agent_name
        secret = self._keys.secret_for(worker.api_key)
        assert secret is not None  # the worker's token was verified with it
        token = mint_job_token(
            api_key=worker.api_key,
            api_secret=secret,
            room=job.room.name,
            identity=identity,
            name=response.participant_name,
            metadata=response.participant_metadata,
            attributes=attributes,
            permissions=session.permissions,
        )
        try:
            await session.assign(offered, self._url(), token)
        except WorkerClosed:
            with self.state.mutate() as tables:
                del tables.jobs[record.id]
            raise
        return record

    def _drop(self, dispatch: DispatchRecord, reason: str, tried: list[str]) -> None:
        logger.info(
            "dropping job of dispatch %s (%s): %s", dispatch.id, dispatch.agent_name, reason
        )
        dropped = DroppedDispatch(
            dispatch_id=dispatch.id,
            agent_name=dispatch.agent_name,
            room=dispatch.room,
            metadata=dispatch.metadata,
            reason=reason,
            at=time.time(),
            workers_tried=tuple(tried),
        )
        with self.state.mutate() as tables:
            tables.dropped.append(dropped)

    def update_job(self, worker_id: str, update: agent.UpdateJobStatus) -> None:
        """A worker's `update_job`; updates for jobs it does not hold are ignored."""
        with self.state.mutate() as tables:
            job = tables.jobs.get(update.job_id)
            if job is None or job.worker_id != worker_id:
                return
            status = agent.JobStatus.Name(update.status)
            tables.jobs[job.id] = replace(
                job,
                status=status,
                error=update.error,
                updated_at=time.time(),
                status_updates=(*job.status_updates, status),
            )

    async def terminate(self, job_id: str) -> None:
        """Ask the job's worker to end it (LiveKit's `TerminateJob`)."""
        job = self.state.read(lambda t: t.jobs.get(job_id))
        if job is None:
            return
        session = self._sessions.get(job.worker_id)
        if session is not None:
            await session.terminate(job_id)
        with self.state.mutate() as tables:
            tables.jobs[job_id] = replace(tables.jobs[job_id], terminated_at=time.time())


def _job_id_of(message: Message) -> str:
    which = message.WhichOneof("message")
    return str(getattr(getattr(message, which), "job_id", "")) if which else ""
