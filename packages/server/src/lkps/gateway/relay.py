"""The worker protocol relay: one authenticated worker socket ⇄ one LiveKit `/agent` socket.

Why it exists: LiveKit accepts any `video.agent` token for any agent name, so a worker
holding one could register as another agent and take its sessions. Here the worker has
proved who it is (the gateway credential, checked before this runs), its register must
name that agent, and only then does LKPS open LiveKit's `/agent` with a worker token it
mints for this one connection. The worker never holds a credential LiveKit accepts.

What it enforces on the worker's messages (each refusal closes the worker with 1008 and
is audited as `agent.worker_refused`): the first message, within `register_timeout`, is
a `register` whose `agent_name` is the authenticated agent; nothing else is a register;
every frame parses as a `WorkerMessage`. What it changes: a `JobAssignment` without a
URL gets the LiveKit URL, so the worker joins the room at LiveKit and not at the
gateway (OSS livekit-server leaves it empty, and livekit-agents then uses the URL it
dialled). Everything else passes through as sent, both ways.

A connection whose registration ends (the observer's `ended`: deregistered, or expired)
is refused the same way, at once when its worker last reported no running job and was
assigned none since. A worker with running jobs is draining (lkps-agent deregisters before livekit-agents waits for its
jobs, and a worker that loses its socket reconnects with a credential that no longer
holds, giving up, jobs and all, after its retries): it keeps its socket until a status
reports no job, and meanwhile every status it reports reaches LiveKit as `WS_FULL`, so
that LiveKit offers it no new job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf.message import DecodeError
from livekit.protocol import agent as proto

from lkps.gateway.observer import WorkerConnectionObserver, WorkerSession, WorkerStatus
from lkps.gateway.sockets import (
    GOING_AWAY,
    INTERNAL_ERROR,
    MESSAGE_TOO_BIG,
    NORMAL,
    POLICY_VIOLATION,
    TRY_AGAIN_LATER,
    Closed,
    RelaySocket,
    UpstreamConnector,
    UpstreamUnavailable,
    sendable,
)

logger = logging.getLogger("lkps.gateway")

DEFAULT_REGISTER_TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20


class RefusalRecorder(Protocol):
    async def refused(
        self,
        *,
        reason: str,
        agent_id: str | None,
        registration_id: str | None,
        client_ip: str | None,
        requested_name: str | None = None,
        status: int,
    ) -> None: ...


class WorkerRefused(Exception):
    """The worker broke the gateway's rules; `str()` is the close reason it is told."""

    def __init__(self, reason: str, *, requested_name: str | None = None, code: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.requested_name = requested_name
        self.code = code or POLICY_VIOLATION


@dataclass(frozen=True, slots=True)
class _Ended:
    """How one direction of the pump ended: close the other side like this."""

    code: int
    reason: str
    refusal: WorkerRefused | None = None


def _refused(reason: str) -> _Ended:
    return _Ended(POLICY_VIOLATION, reason, WorkerRefused(reason))


@dataclass(slots=True)
class _Jobs:
    """The jobs the worker last reported running (and those assigned to it since: its
    next status counts them), and the observer's `ended`: once that is done, the socket
    closes as soon as they are done."""

    ended: asyncio.Future[str]
    running: int = 0

    @property
    def ending(self) -> str | None:
        return self.ended.result() if self.ended.done() else None


def agent_endpoint(livekit_url: str) -> str:
    """`<LiveKit URL>/agent` as livekit-agents builds it: http(s) becomes ws(s)."""
    url = livekit_url.rstrip("/")
    if url.startswith("http"):
        url = "ws" + url.removeprefix("http")
    return f"{url}/agent"


def same_agent(requested: str, agent_id: str) -> bool:
    """Agent ids are canonical hyphenated UUIDs, compared case-insensitively."""
    try:
        canonical = str(uuid.UUID(requested))
    except ValueError:
        return False
    return canonical == requested.lower() and canonical == agent_id.lower()


class GatewayRelay:
    def __init__(
        self,
        *,
        livekit_url: str,
        worker_token: Callable[[str], str],
        connector: UpstreamConnector,
        refusals: RefusalRecorder,
        observer: WorkerConnectionObserver,
        register_timeout: float = DEFAULT_REGISTER_TIMEOUT_SECONDS,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self._livekit_url = livekit_url
        self._upstream_url = agent_endpoint(livekit_url)
        self._worker_token = worker_token
        self._connector = connector
        self._refusals = refusals
        self._observer = observer
        self._register_timeout = register_timeout
        self._max_bytes = max_message_bytes

    async def serve(self, worker: RelaySocket, session: WorkerSession) -> None:
        """Relay until either side closes; both are closed when this returns, also when
        it is cancelled."""
        try:
            register = await self._first_register(worker, session)
        except WorkerRefused as refusal:
            await self._refuse(worker, session, refusal)
            return
        if register is None:
            return  # the worker left before it said anything
        try:
            upstream = await self._connector.connect(
                self._upstream_url, self._worker_token(session.agent_id)
            )
        except UpstreamUnavailable as exc:
            logger.warning(
                "LiveKit /agent unreachable; the worker is told to try again later",
                extra={"agent_id": session.agent_id, "error": str(exc)},
            )
            await _close(worker, TRY_AGAIN_LATER, "LiveKit is unavailable; try again later")
            return
        ended: _Ended | None = None
        try:
            await upstream.send(register)
            await self._observer.connected(session)
            try:
                ended = await self._pump(worker, upstream, session)
            finally:
                await self._observer.closed(session)
        except Exception as exc:
            logger.warning("gateway relay connection failed", extra={"error": repr(exc)})
            ended = _Ended(INTERNAL_ERROR, "gateway relay error")
            await _close(upstream, ended.code, ended.reason)
            await _close(worker, ended.code, ended.reason)
        finally:
            if ended is None:  # cancelled
                await _close(upstream, GOING_AWAY, "gateway closing")
                await _close(worker, GOING_AWAY, "gateway closing")
        if ended.refusal is not None:
            await _close(upstream, NORMAL, "worker refused by the LKPS gateway")
            await self._refuse(worker, session, ended.refusal)

    async def _first_register(self, worker: RelaySocket, session: WorkerSession) -> bytes | None:
        """The worker's register (re-encoded with the canonical agent id), or None when
        it closed first; `WorkerRefused` for anything else."""
        try:
            async with asyncio.timeout(self._register_timeout):
                frame = await worker.receive()
        except TimeoutError:
            raise WorkerRefused(
                f"no register within {self._register_timeout:g} s of connecting"
            ) from None
        if isinstance(frame, Closed):
            return None
        message = self._parse_worker(frame)
        if message.WhichOneof("message") != "register":
            raise WorkerRefused("the first message must be a register")
        requested = message.register.agent_name
        if not same_agent(requested, session.agent_id):
            raise WorkerRefused(
                "agent_name is not the agent this credential was issued to",
                requested_name=requested,
            )
        message.register.agent_name = session.agent_id.lower()
        return message.SerializeToString()

    def _parse_worker(self, frame: bytes | str) -> proto.WorkerMessage:
        if isinstance(frame, str):
            raise WorkerRefused("text frames are not part of the worker protocol")
        if len(frame) > self._max_bytes:
            raise WorkerRefused("message too big", code=MESSAGE_TOO_BIG)
        message = proto.WorkerMessage()
        try:
            message.ParseFromString(frame)
        except DecodeError:
            raise WorkerRefused("unparseable worker message") from None
        return message

    async def _pump(
        self, worker: RelaySocket, upstream: RelaySocket, session: WorkerSession
    ) -> _Ended:
        """Both directions until one ends (then the other side is closed as that one
        was), or until the registration ends (a refusal)."""
        revoked = self._observer.ended(session)
        jobs = _Jobs(revoked)
        outbound = asyncio.create_task(self._worker_to_livekit(worker, upstream, session, jobs))
        inbound = asyncio.create_task(self._livekit_to_worker(upstream, worker, session, jobs))
        try:
            waited: set[asyncio.Future[Any]] = {outbound, inbound, revoked}
            done, _ = await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
            if not done & {outbound, inbound}:
                if not jobs.running:
                    return _refused(revoked.result())
                logger.info(
                    "registration ended: the worker's socket closes when its jobs are done",
                    extra={"agent_id": session.agent_id, "jobs": jobs.running},
                )
                done, _ = await asyncio.wait(
                    {outbound, inbound}, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            for task in (outbound, inbound):
                task.cancel()
            await asyncio.gather(outbound, inbound, return_exceptions=True)
        first = outbound if outbound in done else inbound
        ended = _result(first)
        if ended.refusal is None:
            await _close(upstream if first is outbound else worker, ended.code, ended.reason)
            await _close(worker if first is outbound else upstream, ended.code, ended.reason)
        return ended

    async def _worker_to_livekit(
        self, worker: RelaySocket, upstream: RelaySocket, session: WorkerSession, jobs: _Jobs
    ) -> _Ended:
        while True:
            frame = await worker.receive()
            if isinstance(frame, Closed):
                return _Ended(frame.code, frame.reason)
            try:
                message = self._parse_worker(frame)
                kind = message.WhichOneof("message")
                if kind == "register":
                    raise WorkerRefused("a second register on the same connection")
            except WorkerRefused as refusal:
                return _Ended(POLICY_VIOLATION, refusal.reason, refusal)
            assert isinstance(frame, bytes)  # _parse_worker refused text
            if kind == "update_worker":
                jobs.running = message.update_worker.job_count
                if (ending := jobs.ending) is not None:
                    if not jobs.running:
                        return _refused(ending)
                    if message.update_worker.status != proto.WS_FULL:
                        message.update_worker.status = proto.WS_FULL
                        frame = message.SerializeToString()
            await upstream.send(frame)
            if kind == "update_worker":
                update = message.update_worker
                await self._observer.status(
                    session,
                    WorkerStatus(
                        available=update.status == proto.WS_AVAILABLE,
                        load=update.load,
                        job_count=update.job_count,
                    ),
                )

    async def _livekit_to_worker(
        self, upstream: RelaySocket, worker: RelaySocket, session: WorkerSession, jobs: _Jobs
    ) -> _Ended:
        while True:
            frame = await upstream.receive()
            if isinstance(frame, Closed):
                return _Ended(frame.code, frame.reason)
            if isinstance(frame, str) or len(frame) > self._max_bytes:
                return _Ended(INTERNAL_ERROR, "LiveKit sent a message the gateway cannot relay")
            message = proto.ServerMessage()
            try:
                message.ParseFromString(frame)
            except DecodeError:
                return _Ended(INTERNAL_ERROR, "LiveKit sent an unparseable message")
            kind = message.WhichOneof("message")
            if kind == "assignment":
                jobs.running += 1
                if not message.assignment.url:
                    message.assignment.url = self._livekit_url
                    frame = message.SerializeToString()
            if kind == "register":
                # Before the worker hears it: once it is registered, LKPS counts it.
                await self._observer.registered(session, message.register.worker_id)
            await worker.send(frame)

    async def _refuse(
        self, worker: RelaySocket, session: WorkerSession, refusal: WorkerRefused
    ) -> None:
        logger.warning(
            "worker refused: %s",
            refusal.reason,
            extra={"agent_id": session.agent_id, "requested_agent_name": refusal.requested_name},
        )
        try:
            await self._refusals.refused(
                reason=refusal.reason,
                agent_id=session.agent_id,
                registration_id=session.registration_id,
                client_ip=session.client_ip,
                requested_name=refusal.requested_name,
                status=refusal.code,
            )
        finally:
            await _close(worker, refusal.code, refusal.reason)


def _result(task: asyncio.Task[_Ended]) -> _Ended:
    """A direction's ending; a socket that failed under it counts as lost."""
    if task.cancelled():
        return _Ended(GOING_AWAY, "gateway closing")
    error = task.exception()
    if error is None:
        return task.result()
    logger.warning("gateway relay connection failed", extra={"error": repr(error)})
    return _Ended(INTERNAL_ERROR, "gateway relay error")


async def _close(socket: RelaySocket, code: int, reason: str) -> None:
    code, reason = sendable(code, reason)
    with contextlib.suppress(Exception):
        await socket.close(code, reason)
