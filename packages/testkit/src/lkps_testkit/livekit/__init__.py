"""A LiveKit server double that speaks LiveKit's real wire protocol, for tests.

No LiveKit server runs on the test machines; this one implements, with
`livekit-protocol`'s protobufs, what LKPS and its agents touch: the `/agent` worker
socket (registration, availability, assignment, job status), Twirp `RoomService` and
`AgentDispatchService`, joins with LiveKit's token checks and `roomConfig` semantics,
and `/rtc` up to the join. It checks tokens exactly as LiveKit does. See
docs/livekit-double.md for what it does and deliberately does not.

- `LiveKitDouble`: run it from a thread, drive it, read what happened, wait for it.
- `python -m lkps_testkit.livekit`: run it as a process.
"""

from lkps_testkit.livekit.double import LiveKitDouble
from lkps_testkit.livekit.errors import HttpRefusal, ServiceError
from lkps_testkit.livekit.records import (
    DispatchRecord,
    DroppedDispatch,
    JobRecord,
    ParticipantRecord,
    RoomRecord,
    WorkerMessage,
    WorkerRecord,
)
from lkps_testkit.livekit.tokens import TokenError

__all__ = [
    "DispatchRecord",
    "DroppedDispatch",
    "HttpRefusal",
    "JobRecord",
    "LiveKitDouble",
    "ParticipantRecord",
    "RoomRecord",
    "ServiceError",
    "TokenError",
    "WorkerMessage",
    "WorkerRecord",
]
