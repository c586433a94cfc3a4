"""`LiveKitDouble`: the LiveKit server double on 127.0.0.1, run from a background thread.

    with LiveKitDouble() as livekit:
        token = livekit.token("alice", room="demo", room_config=...)
        livekit.join(token)
        livekit.wait_for_job(agent_name="helper")

The double's event loop runs in its own thread, so a blocking test can drive it, and
so can a coroutine on another loop (an in-process `AgentServer` included): every action
has a blocking form and an `_async` form, and every reader is safe from any thread.
The socket is bound in the constructor, so `url` is known before `start()`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import secrets
import socket
import threading
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any, TypeVar

from livekit import api
from livekit.protocol import room as room_pb

from lkps_testkit.livekit.app import serve, shutdown
from lkps_testkit.livekit.engine import Engine
from lkps_testkit.livekit.records import (
    DispatchRecord,
    DroppedDispatch,
    JobRecord,
    ParticipantRecord,
    RoomRecord,
    WorkerMessage,
    WorkerRecord,
)
from lkps_testkit.livekit.state import DoubleState
from lkps_testkit.livekit.tokens import LEEWAY_SECONDS, KeyRing

T = TypeVar("T")
Probe = tuple[Callable[[], T | None], str]
DEFAULT_TIMEOUT = 10.0


class LiveKitDouble:
    def __init__(
        self,
        api_key: str = "devkey",
        api_secret: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        extra_keys: Mapping[str, str] | None = None,
        close_workers_on_token_expiry: bool = True,
        assignment_timeout: float = 10.0,
        leeway: float = LEEWAY_SECONDS,
    ) -> None:
        """`extra_keys` adds API key pairs (LiveKit accepts several); `leeway` is the
        clock skew allowed on `exp`/`nbf` (LiveKit: 60 s). With
        `close_workers_on_token_expiry`, a worker's socket is closed when the token it
        connected with expires, so that tests see the SDK reconnect with a fresh one;
        LiveKit itself only checks the token at connection time."""
        self.api_key = api_key
        self.api_secret = api_secret or secrets.token_urlsafe(32)
        keys = KeyRing({**(extra_keys or {}), api_key: self.api_secret}, leeway=leeway)
        self.engine = Engine(
            keys,
            close_workers_on_token_expiry=close_workers_on_token_expiry,
            assignment_timeout=assignment_timeout,
        )
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        self._thread = threading.Thread(target=self._run, name="livekit-double", daemon=True)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """The WebSocket URL, as `LIVEKIT_URL` (what workers and clients connect to)."""
        return f"ws://{self.host}:{self.port}"

    @property
    def http_url(self) -> str:
        """The same server for HTTP clients (Twirp, `/_double/*`)."""
        return f"http://{self.host}:{self.port}"

    @property
    def state(self) -> DoubleState:
        return self.engine.state

    # Lifecycle.

    def start(self) -> LiveKitDouble:
        self._thread.start()
        if not self._ready.wait(timeout=10) or self._error is not None:
            raise RuntimeError("the LiveKit double did not start") from self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread.is_alive():
            self._thread.join(timeout=15)
        self._socket.close()

    def __enter__(self) -> LiveKitDouble:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            runner = await serve(self.engine, self._socket)
        except BaseException as error:
            self._error = error
            self._ready.set()
            raise
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await shutdown(self.engine, runner)

    def _schedule(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if self._loop is None:
            coroutine.close()
            raise RuntimeError("the LiveKit double is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run on the double's loop and wait (never call this from that loop)."""
        return self._schedule(coroutine).result(DEFAULT_TIMEOUT)

    async def _call_async(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run on the double's loop, awaited from the caller's loop."""
        return await asyncio.wrap_future(self._schedule(coroutine))

    # Acting as a client would.

    def join(self, token: str, room: str | None = None) -> ParticipantRecord:
        """Join as the token's participant, with LiveKit's checks (raises `TokenError`
        or `ServiceError` where LiveKit refuses); creates the room from the token's
        `roomConfig` if it does not exist, which dispatches its agents."""
        return self._call(self.engine.join(token, room))

    async def join_async(self, token: str, room: str | None = None) -> ParticipantRecord:
        return await self._call_async(self.engine.join(token, room))

    def leave(self, room: str, identity: str) -> ParticipantRecord:
        return self._call(self.engine.leave(room, identity))

    async def leave_async(self, room: str, identity: str) -> ParticipantRecord:
        return await self._call_async(self.engine.leave(room, identity))

    def close_workers(self, agent_name: str | None = None) -> int:
        """Close the sockets of all workers, or of one agent name's, so that they must
        reconnect; returns how many were closed."""
        return self._call(self.engine.close_workers(agent_name))

    async def close_workers_async(self, agent_name: str | None = None) -> int:
        return await self._call_async(self.engine.close_workers(agent_name))

    def token(
        self,
        identity: str = "",
        *,
        room: str | None = None,
        grants: api.VideoGrants | None = None,
        kind: str | None = None,
        room_config: room_pb.RoomConfiguration | None = None,
        ttl: datetime.timedelta = datetime.timedelta(hours=1),
        api_key: str | None = None,
        api_secret: str | None = None,
    ) -> str:
        """A token signed with the double's key: by default, to join `room`."""
        if grants is None:
            grants = api.VideoGrants(room_join=True, room=room or "")
        token = (
            api.AccessToken(api_key or self.api_key, api_secret or self.api_secret)
            .with_identity(identity)
            .with_grants(grants)
            .with_ttl(ttl)
        )
        if kind is not None:
            token.with_kind(kind)  # type: ignore[arg-type]
        if room_config is not None:
            token.with_room_config(room_config)
        return token.to_jwt()

    # Reading what happened (safe from any thread).

    def rooms(self, *, active_only: bool = True) -> list[RoomRecord]:
        return self.state.rooms(active_only=active_only)

    def room(self, name: str) -> RoomRecord | None:
        return self.state.room(name)

    def participants(
        self, room: str | None = None, *, active_only: bool = True
    ) -> list[ParticipantRecord]:
        return self.state.participants(room, active_only=active_only)

    def dispatches(self, room: str | None = None) -> list[DispatchRecord]:
        return self.state.dispatches(room)

    def workers(
        self, agent_name: str | None = None, *, connected_only: bool = True
    ) -> list[WorkerRecord]:
        """Worker connections; with `connected_only=False`, every one there ever was."""
        return self.state.workers(agent_name, connected_only=connected_only)

    def jobs(self, agent_name: str | None = None, room: str | None = None) -> list[JobRecord]:
        return self.state.jobs(agent_name, room)

    @property
    def dropped_dispatches(self) -> list[DroppedDispatch]:
        return self.state.dropped()

    def worker_messages(self, worker_id: str | None = None) -> list[WorkerMessage]:
        return self.state.messages(worker_id)

    # Waiting for it.

    def wait_until(self, probe: Callable[[], T | None], *, timeout: float = DEFAULT_TIMEOUT) -> T:
        return self.state.wait_until(probe, timeout=timeout)

    async def wait_until_async(
        self,
        probe: Callable[[], T | None],
        *,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (a test's wait gives up by itself)
    ) -> T:
        return await self.state.wait_until_async(probe, timeout=timeout)

    def wait_for_workers(
        self, agent_name: str = "", count: int = 1, *, timeout: float = DEFAULT_TIMEOUT
    ) -> list[WorkerRecord]:
        probe, what = self._registered_workers(agent_name, count)
        return self.state.wait_until(probe, timeout=timeout, what=what)

    async def wait_for_workers_async(
        self,
        agent_name: str = "",
        count: int = 1,
        *,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (a test's wait gives up by itself)
    ) -> list[WorkerRecord]:
        probe, what = self._registered_workers(agent_name, count)
        return await self.state.wait_until_async(probe, timeout=timeout, what=what)

    def wait_for_job(
        self,
        agent_name: str | None = None,
        *,
        room: str | None = None,
        status: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> JobRecord:
        probe, what = self._job(agent_name, room, status)
        return self.state.wait_until(probe, timeout=timeout, what=what)

    async def wait_for_job_async(
        self,
        agent_name: str | None = None,
        *,
        room: str | None = None,
        status: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (a test's wait gives up by itself)
    ) -> JobRecord:
        probe, what = self._job(agent_name, room, status)
        return await self.state.wait_until_async(probe, timeout=timeout, what=what)

    def _registered_workers(self, agent_name: str, count: int) -> Probe[list[WorkerRecord]]:
        def probe() -> list[WorkerRecord]:
            found = [w for w in self.state.workers(agent_name) if w.registered]
            return found if len(found) >= count else []

        return probe, f"{count} registered worker(s) for agent {agent_name!r}"

    def _job(
        self, agent_name: str | None, room: str | None, status: str | None
    ) -> Probe[JobRecord]:
        def probe() -> JobRecord | None:
            jobs = self.state.jobs(agent_name, room)
            return next((j for j in jobs if status is None or j.status == status), None)

        return probe, f"a job (agent {agent_name!r}, room {room!r}, status {status!r})"
