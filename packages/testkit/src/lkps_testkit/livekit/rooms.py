"""Rooms, their participants and their agent dispatches (livekit-server `pkg/rtc/room.go`,
`pkg/service/roomallocator.go`, `roommanager.go`).

What LiveKit does, and so the double:

- A room is created by the first join (from the token's `roomConfig`), by
  `CreateRoom`, or by `CreateDispatch`. A request for a room that already exists is
  answered with the existing room: its configuration, from a token or from
  `CreateRoom`, is ignored.
- Unset timeouts take the server defaults (empty 300 s, departure 20 s). A room with no
  participant that counts (agents do not) closes `empty_timeout` after its creation if
  nobody ever joined, else `departure_timeout` after the last one left.
- `max_participants` counts participants that are not agents or recorders: an agent
  can always join, and a person is refused when the others already fill the room.
- A second join with the same identity replaces the first participant.
- Each `RoomAgentDispatch` of the configuration becomes a dispatch of the room; a room
  configured with none gets one implicit dispatch with no agent name (LiveKit's
  automatic dispatch). Each dispatch launches one room job (JT_ROOM) when it is created.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from livekit.protocol import agent_dispatch, models
from livekit.protocol import room as room_pb

from lkps_testkit.livekit import errors
from lkps_testkit.livekit.errors import ServiceError
from lkps_testkit.livekit.records import (
    DISPATCH_PREFIX,
    PARTICIPANT_PREFIX,
    ROOM_PREFIX,
    DispatchRecord,
    ParticipantRecord,
    RoomRecord,
    new_id,
)
from lkps_testkit.livekit.state import DoubleState, Tables
from lkps_testkit.livekit.tokens import VerifiedToken

DEFAULT_EMPTY_TIMEOUT = 300  # livekit-server config defaults
DEFAULT_DEPARTURE_TIMEOUT = 20

# What a room does with its dispatches and jobs; the engine wires these to the workers.
Launch = Callable[[DispatchRecord, models.Room], None]
Terminate = Callable[[str], None]


def create_request(token: VerifiedToken, room: str) -> room_pb.CreateRoomRequest:
    """The room a join would create (`ValidateConnectRequest` + `SetRoomConfiguration`)."""
    request = room_pb.CreateRoomRequest(
        name=room, room_preset=str(token.claims.get("roomPreset", ""))
    )
    if config := token.room_config():
        request.agents.extend(config.agents)
        request.empty_timeout = config.empty_timeout
        request.departure_timeout = config.departure_timeout
        request.max_participants = config.max_participants
        request.metadata = config.metadata
    return request


class RoomManager:
    """Room state transitions; runs on the double's event loop only."""

    def __init__(self, state: DoubleState, *, launch: Launch, terminate: Terminate) -> None:
        self._state = state
        self._launch = launch
        self._terminate = terminate

    # Rooms.

    def get_or_create(self, request: room_pb.CreateRoomRequest) -> RoomRecord:
        if existing := self._state.room(request.name):
            return existing
        if request.room_preset:
            # The double has no named room configurations; LiveKit refuses unknown ones.
            raise ServiceError(
                "invalid_argument", "unknown room configuration in create room request"
            )
        room = RoomRecord(
            sid=new_id(ROOM_PREFIX),
            name=request.name,
            created_at=time.time(),
            empty_timeout=request.empty_timeout or DEFAULT_EMPTY_TIMEOUT,
            departure_timeout=request.departure_timeout or DEFAULT_DEPARTURE_TIMEOUT,
            max_participants=request.max_participants,
            metadata=request.metadata,
        )
        with self._state.mutate() as tables:
            tables.rooms[room.sid] = room
        agents = list(request.agents) or [agent_dispatch.RoomAgentDispatch()]
        for spec in agents:
            self.add_dispatch(
                room,
                agent_name=spec.agent_name,
                metadata=spec.metadata,
                attributes=spec.attributes,
                deployment=spec.deployment,
                implicit=not request.agents,
            )
        return room

    def require(self, name: str) -> RoomRecord:
        if room := self._state.room(name):
            return room
        raise errors.room_not_found()

    def close(self, name: str, reason: str, *, deleted: bool = False) -> RoomRecord:
        """Close a room: everyone leaves, and the jobs still running are terminated.

        LiveKit disconnects the agents, whose jobs then end; the double holds no agent
        connection, so it sends the workers a `termination` for those jobs instead."""
        room = self.require(name)
        now = time.time()
        disconnect_reason = "ROOM_DELETED" if deleted else "ROOM_CLOSED"
        with self._state.mutate() as tables:
            for participant in _active(tables, room.sid):
                tables.participants[participant.sid] = replace(
                    participant, left_at=now, disconnect_reason=disconnect_reason
                )
            room = tables.rooms[room.sid] = replace(room, closed_at=now, close_reason=reason)
            running = [
                j.id
                for j in tables.jobs.values()
                if j.room_sid == room.sid and j.status in ("JS_PENDING", "JS_RUNNING")
            ]
        for job_id in running:
            self._terminate(job_id)
        return room

    def sweep(self) -> None:
        """Close the rooms whose empty or departure timeout has passed (`CloseIfEmpty`)."""
        now = time.time()
        for room in self._state.rooms():
            if any(not p.dependent for p in self._state.participants(room.name)):
                continue
            if room.first_joined_at is not None and room.last_left_at is not None:
                since, timeout, reason = room.last_left_at, room.departure_timeout, "departure"
            else:
                since, timeout, reason = room.created_at, room.empty_timeout, "empty"
            if now - since >= timeout:
                self.close(room.name, f"{reason} timeout")

    # Participants.

    def join(
        self,
        token: VerifiedToken,
        room_name: str,
        *,
        via: str,
        metadata: str = "",
        attributes: Mapping[str, str] | None = None,
        sdk: str = "",
    ) -> ParticipantRecord:
        """Add the token's participant to the room, creating the room if needed."""
        room = self.get_or_create(create_request(token, room_name))
        now = time.time()
        with self._state.mutate() as tables:
            others = [p for p in _active(tables, room.sid) if p.identity != token.identity]
            counted = sum(1 for p in others if not p.dependent)
            if (
                not token.is_dependent
                and room.max_participants
                and counted >= room.max_participants
            ):
                raise errors.room_full()
            for previous in _active(tables, room.sid):
                if previous.identity == token.identity:
                    tables.participants[previous.sid] = replace(
                        previous, left_at=now, disconnect_reason="DUPLICATE_IDENTITY"
                    )
            participant = ParticipantRecord(
                sid=new_id(PARTICIPANT_PREFIX),
                identity=token.identity,
                room=room.name,
                room_sid=room.sid,
                kind=models.ParticipantInfo.Kind.Name(token.participant_kind),
                dependent=token.is_dependent,
                joined_at=now,
                via=via,
                name=str(token.claims.get("name", "")),
                metadata=metadata or str(token.claims.get("metadata", "")),
                attributes={**token.claims.get("attributes", {}), **(attributes or {})},
                sdk=sdk,
            )
            tables.participants[participant.sid] = participant
            current = tables.rooms[room.sid]
            if not participant.dependent and current.first_joined_at is None:
                tables.rooms[room.sid] = replace(current, first_joined_at=now)
        return participant

    def leave(self, room_name: str, identity: str, reason: str) -> ParticipantRecord:
        self.require(room_name)
        for participant in self._state.participants(room_name):
            if participant.identity == identity:
                return self.disconnect(participant, reason)
        raise errors.participant_not_found()

    def disconnect(self, participant: ParticipantRecord, reason: str) -> ParticipantRecord:
        """End this participant's session, if it is still the one in the room."""
        now = time.time()
        with self._state.mutate() as tables:
            current = tables.participants[participant.sid]
            if not current.active:
                return current
            left = tables.participants[current.sid] = replace(
                current, left_at=now, disconnect_reason=reason
            )
            if not current.dependent:
                room = tables.rooms[current.room_sid]
                tables.rooms[room.sid] = replace(room, last_left_at=now)
        return left

    # Dispatches.

    def add_dispatch(
        self,
        room: RoomRecord,
        *,
        agent_name: str,
        metadata: str,
        attributes: Mapping[str, str],
        deployment: str = "",
        implicit: bool = False,
    ) -> DispatchRecord:
        dispatch = DispatchRecord(
            id=new_id(DISPATCH_PREFIX),
            agent_name=agent_name,
            room=room.name,
            room_sid=room.sid,
            metadata=metadata,
            created_at=time.time(),
            implicit=implicit,
            attributes=dict(attributes),
            deployment=deployment,
        )
        with self._state.mutate() as tables:
            tables.dispatches[dispatch.id] = dispatch
        self._launch(dispatch, self.room_proto(room))
        return dispatch

    def delete_dispatch(self, room_name: str, dispatch_id: str) -> DispatchRecord:
        room = self.require(room_name)
        with self._state.mutate() as tables:
            dispatch = tables.dispatches.get(dispatch_id)
            if dispatch is None or dispatch.room_sid != room.sid or dispatch.deleted_at:
                raise ServiceError("not_found", "dispatch ID not found")
            dispatch = tables.dispatches[dispatch_id] = replace(dispatch, deleted_at=time.time())
            running = [
                j.id
                for j in tables.jobs.values()
                if j.dispatch_id == dispatch_id and j.status in ("JS_PENDING", "JS_RUNNING")
            ]
        for job_id in running:
            self._terminate(job_id)
        return dispatch

    def live_dispatches(self, room: RoomRecord) -> list[DispatchRecord]:
        return [
            d for d in self._state.dispatches() if d.room_sid == room.sid and d.deleted_at is None
        ]

    # Protobuf views.

    def room_proto(self, room: RoomRecord) -> models.Room:
        participants = self._state.participants(room.name)
        return models.Room(
            sid=room.sid,
            name=room.name,
            empty_timeout=room.empty_timeout,
            departure_timeout=room.departure_timeout,
            max_participants=room.max_participants,
            creation_time=int(room.created_at),
            creation_time_ms=int(room.created_at * 1000),
            metadata=room.metadata,
            num_participants=len([p for p in participants if p.room_sid == room.sid]),
        )


def participant_proto(participant: ParticipantRecord) -> models.ParticipantInfo:
    return models.ParticipantInfo(
        sid=participant.sid,
        identity=participant.identity,
        name=participant.name,
        metadata=participant.metadata,
        state="ACTIVE" if participant.active else "DISCONNECTED",
        joined_at=int(participant.joined_at),
        joined_at_ms=int(participant.joined_at * 1000),
        kind=participant.kind,
        attributes=dict(participant.attributes),
    )


def _active(tables: Tables, room_sid: str) -> list[ParticipantRecord]:
    return [p for p in tables.participants.values() if p.room_sid == room_sid and p.active]
