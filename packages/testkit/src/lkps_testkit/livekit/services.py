"""LiveKit's `RoomService` and `AgentDispatchService`, the methods LKPS and its tests use.

The grant checks are LiveKit's (`pkg/service/auth.go`): `roomCreate` to create or
delete rooms, `roomList` to list them, `roomAdmin` *for that room* for participants
and dispatches. LiveKit reports a missing grant as Twirp `unauthenticated` with the
message "permissions denied" (its `twirpAuthError`), never as `permission_denied`;
so does the double. `CreateDispatch` creates the room when it does not exist, as
LiveKit's default `auto_create` does.
"""

from __future__ import annotations

from livekit.protocol import agent, agent_dispatch, models
from livekit.protocol import room as room_pb

from lkps_testkit.livekit import errors
from lkps_testkit.livekit.errors import ServiceError
from lkps_testkit.livekit.records import DispatchRecord, JobRecord, RoomRecord
from lkps_testkit.livekit.rooms import RoomManager, participant_proto
from lkps_testkit.livekit.state import DoubleState
from lkps_testkit.livekit.tokens import (
    PERMISSION_DENIED,
    VerifiedToken,
    can_admin_room,
    can_create_rooms,
    can_list_rooms,
)
from lkps_testkit.livekit.twirp import Method, Service


def _require(allowed: bool) -> None:
    if not allowed:
        raise ServiceError("unauthenticated", PERMISSION_DENIED)


def _ns(seconds: float | None) -> int:
    return int(seconds * 1e9) if seconds else 0


class RoomService:
    def __init__(self, rooms: RoomManager, state: DoubleState) -> None:
        self._rooms = rooms
        self._state = state

    def methods(self) -> Service:
        return {
            "CreateRoom": Method(room_pb.CreateRoomRequest, self.create_room),
            "ListRooms": Method(room_pb.ListRoomsRequest, self.list_rooms),
            "DeleteRoom": Method(room_pb.DeleteRoomRequest, self.delete_room),
            "ListParticipants": Method(room_pb.ListParticipantsRequest, self.list_participants),
            "GetParticipant": Method(room_pb.RoomParticipantIdentity, self.get_participant),
            "RemoveParticipant": Method(room_pb.RoomParticipantIdentity, self.remove_participant),
        }

    def create_room(
        self, request: room_pb.CreateRoomRequest, token: VerifiedToken | None
    ) -> models.Room:
        _require(can_create_rooms(token))
        if not request.name:
            raise ServiceError("invalid_argument", "no room name")
        return self._rooms.room_proto(self._rooms.get_or_create(request))

    def list_rooms(
        self, request: room_pb.ListRoomsRequest, token: VerifiedToken | None
    ) -> room_pb.ListRoomsResponse:
        _require(can_list_rooms(token))
        names = set(request.names)
        rooms = [r for r in self._state.rooms() if not names or r.name in names]
        return room_pb.ListRoomsResponse(rooms=[self._rooms.room_proto(r) for r in rooms])

    def delete_room(
        self, request: room_pb.DeleteRoomRequest, token: VerifiedToken | None
    ) -> room_pb.DeleteRoomResponse:
        _require(can_create_rooms(token))
        self._rooms.close(request.room, "deleted", deleted=True)
        return room_pb.DeleteRoomResponse()

    def list_participants(
        self, request: room_pb.ListParticipantsRequest, token: VerifiedToken | None
    ) -> room_pb.ListParticipantsResponse:
        _require(can_admin_room(token, request.room))
        participants = self._state.participants(request.room)
        return room_pb.ListParticipantsResponse(
            participants=[participant_proto(p) for p in participants]
        )

    def get_participant(
        self, request: room_pb.RoomParticipantIdentity, token: VerifiedToken | None
    ) -> models.ParticipantInfo:
        _require(can_admin_room(token, request.room))
        for participant in self._state.participants(request.room):
            if participant.identity == request.identity:
                return participant_proto(participant)
        raise errors.participant_not_found()

    def remove_participant(
        self, request: room_pb.RoomParticipantIdentity, token: VerifiedToken | None
    ) -> room_pb.RemoveParticipantResponse:
        _require(can_admin_room(token, request.room))
        self._rooms.leave(request.room, request.identity, "PARTICIPANT_REMOVED")
        return room_pb.RemoveParticipantResponse()


class AgentDispatchService:
    def __init__(self, rooms: RoomManager, state: DoubleState) -> None:
        self._rooms = rooms
        self._state = state

    def methods(self) -> Service:
        return {
            "CreateDispatch": Method(
                agent_dispatch.CreateAgentDispatchRequest, self.create_dispatch
            ),
            "ListDispatch": Method(agent_dispatch.ListAgentDispatchRequest, self.list_dispatch),
            "DeleteDispatch": Method(
                agent_dispatch.DeleteAgentDispatchRequest, self.delete_dispatch
            ),
        }

    def create_dispatch(
        self, request: agent_dispatch.CreateAgentDispatchRequest, token: VerifiedToken | None
    ) -> agent_dispatch.AgentDispatch:
        _require(can_admin_room(token, request.room))
        room = self._rooms.get_or_create(room_pb.CreateRoomRequest(name=request.room))
        dispatch = self._rooms.add_dispatch(
            room,
            agent_name=request.agent_name,
            metadata=request.metadata,
            attributes=request.attributes,
            deployment=request.deployment,
        )
        return self._dispatch_proto(dispatch, room)

    def list_dispatch(
        self, request: agent_dispatch.ListAgentDispatchRequest, token: VerifiedToken | None
    ) -> agent_dispatch.ListAgentDispatchResponse:
        _require(can_admin_room(token, request.room))
        room = self._rooms.require(request.room)
        dispatches = [
            self._dispatch_proto(d, room)
            for d in self._rooms.live_dispatches(room)
            if not request.dispatch_id or d.id == request.dispatch_id
        ]
        return agent_dispatch.ListAgentDispatchResponse(agent_dispatches=dispatches)

    def delete_dispatch(
        self, request: agent_dispatch.DeleteAgentDispatchRequest, token: VerifiedToken | None
    ) -> agent_dispatch.AgentDispatch:
        _require(can_admin_room(token, request.room))
        dispatch = self._rooms.delete_dispatch(request.room, request.dispatch_id)
        return self._dispatch_proto(dispatch, self._rooms.require(request.room))

    def _dispatch_proto(
        self, dispatch: DispatchRecord, room: RoomRecord
    ) -> agent_dispatch.AgentDispatch:
        room_proto = self._rooms.room_proto(room)
        jobs = [
            _job_proto(j, room_proto) for j in self._state.jobs() if j.dispatch_id == dispatch.id
        ]
        return agent_dispatch.AgentDispatch(
            id=dispatch.id,
            agent_name=dispatch.agent_name,
            room=dispatch.room,
            metadata=dispatch.metadata,
            deployment=dispatch.deployment,
            attributes=dict(dispatch.attributes),
            state=agent_dispatch.AgentDispatchState(
                jobs=jobs, created_at=_ns(dispatch.created_at), deleted_at=_ns(dispatch.deleted_at)
            ),
        )


def _job_proto(job: JobRecord, room: models.Room) -> agent.Job:
    ended = job.status in ("JS_SUCCESS", "JS_FAILED")
    return agent.Job(
        id=job.id,
        dispatch_id=job.dispatch_id,
        type=agent.JobType.JT_ROOM,
        room=room,
        agent_name=job.agent_name,
        metadata=job.metadata,
        state=agent.JobState(
            status=job.status,
            error=job.error,
            started_at=_ns(job.assigned_at),
            updated_at=_ns(job.updated_at or job.assigned_at),
            ended_at=_ns(job.updated_at) if ended else 0,
            participant_identity=job.participant_identity,
            worker_id=job.worker_id,
        ),
    )
