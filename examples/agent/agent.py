"""A minimal agent on lkps-agent: it greets whoever starts a session, over a data message,
echoes what they send, and plays their microphone back to them (an echo test), saying
once a second how loud it hears them.

Against `lkps dev` (and `livekit-server --dev`) on this machine:

    LKPS_ENVIRONMENT=dev python3 -m uv run python examples/agent/agent.py start

Against a real LKPS, configure the agent's Entra identity instead (see docs/agent-guide.md):

    LKPS_ENVIRONMENT=np AZURE_TENANT_ID=... AZURE_CLIENT_ID=<agent app id> \
    AZURE_CLIENT_SECRET=... LKPS_AUTH=secret python examples/agent/agent.py start

No LIVEKIT_API_KEY or LIVEKIT_API_SECRET anywhere: LKPS issues the worker's token.

AGENT_HTTP_PORT sets the port of the worker's health endpoint (livekit-agents binds 8081
under `start`); 0 picks any free port, for several agents on one machine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

from livekit import rtc
from livekit.agents import JobContext

from lkps_agent import LkpsAgentServer, job_count_load, run_app

logger = logging.getLogger("example-agent")

GREETING_TOPIC = "lkps.example"

# The worker's health endpoint (GET / and /worker): livekit-agents binds 8081 under `start`
# unless told otherwise; 0 picks any free port.
http_port: dict[str, Any] = (
    {"port": int(os.environ["AGENT_HTTP_PORT"])} if os.environ.get("AGENT_HTTP_PORT") else {}
)


def _load() -> dict[str, Any]:
    """The load the worker reports (docs/agent-guide.md, "The load a worker reports").

    AGENT_FIXED_LOAD=0.05 reports that number, AGENT_MAX_JOBS=4 the worker's own jobs
    (`job_count_load`); unset, livekit-agents' default, the machine's CPU. livekit-server
    skips a worker reporting 0.7 or more whatever its threshold, and a shared machine (a
    CI runner) is often that busy: the end-to-end tests fix the load.

    For tests only, AGENT_LOAD_FILE=<path> reports the number written in that file,
    read again at each report (every 0.5 s), so a test can change a running worker's
    load (tests/realserver/test_gateway_presence.py); AGENT_FIXED_LOAD while the file is
    missing or unreadable."""
    fixed = os.environ.get("AGENT_FIXED_LOAD")
    if load_file := os.environ.get("AGENT_LOAD_FILE"):
        return {"load_fnc": lambda: _load_in(Path(load_file), float(fixed or 0))}
    if fixed:
        load = float(fixed)
        return {"load_fnc": lambda: load}
    if max_jobs := os.environ.get("AGENT_MAX_JOBS"):
        return {"load_fnc": job_count_load(int(max_jobs))}
    return {}


def _load_in(path: Path, otherwise: float) -> float:
    try:
        return float(path.read_text().strip())
    except (OSError, ValueError):
        return otherwise


server = LkpsAgentServer(  # was: AgentServer(...)
    # At this load the worker reports itself full; "inf" never does (livekit-server still
    # applies its own agents.target_load to the load reported).
    load_threshold=float(os.environ.get("AGENT_LOAD_THRESHOLD", "0.7")),
    **http_port,
    **_load(),
)


@server.rtc_session()  # was: @server.rtc_session(agent_name="my-agent"); the name is the app id
async def entrypoint(ctx: JobContext) -> None:
    # The client's `metadata` from POST /api/session/start, exactly as it sent it.
    metadata: dict[str, Any] = json.loads(ctx.job.metadata or "{}")
    logger.info("session started", extra={"room": ctx.job.room.name, "keys": sorted(metadata)})
    _report(ctx, metadata)

    await ctx.connect()

    async def greet() -> None:
        # Jobs run in processes of their own: the agent name comes with the job.
        greeting = {"greeting": f"hello from {ctx.job.agent_name}", "metadata": metadata}
        await ctx.room.local_participant.publish_data(
            json.dumps(greeting), reliable=True, topic=GREETING_TOPIC
        )

    replies: set[asyncio.Task[None]] = set()

    @ctx.room.on("data_received")
    def on_data(packet: rtc.DataPacket) -> None:
        if packet.topic == GREETING_TOPIC:
            answer = json.dumps({"echo": packet.data.decode(errors="replace")})
            reply = asyncio.create_task(
                ctx.room.local_participant.publish_data(answer, reliable=True, topic=GREETING_TOPIC)
            )
            replies.add(reply)
            reply.add_done_callback(replies.discard)

    client = await ctx.wait_for_participant()
    await greet()
    echoes: set[asyncio.Task[None]] = set()

    @ctx.room.on("track_subscribed")
    def on_track(
        track: rtc.Track, _publication: rtc.RemoteTrackPublication, who: rtc.RemoteParticipant
    ) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO and who.identity == client.identity:
            echo = asyncio.create_task(_echo(ctx.room, track))
            echoes.add(echo)
            echo.add_done_callback(echoes.discard)

    for publication in client.track_publications.values():  # published before we joined
        if publication.track is not None:
            on_track(publication.track, publication, client)
    # Stay until the client leaves or the room ends, then end the job. Returning alone
    # would keep the agent in the room: livekit-agents ends a job on `ctx.shutdown()` or
    # when its room goes, and then gives the entrypoint 15 s to return.
    over = asyncio.Event()
    ctx.room.on(
        "participant_disconnected",
        lambda participant: over.set() if participant.identity == client.identity else None,
    )
    ctx.room.on("disconnected", lambda *_: over.set())
    await over.wait()
    ctx.shutdown(reason="the client left")


async def _echo(room: rtc.Room, track: rtc.Track) -> None:
    """Play the client's audio back as the agent's own track, and publish once a second
    what was heard: `{"heard": {"frames": n, "level": rms}}` (rms of the last second,
    0 to 1), so that a client sees its microphone reach the agent."""
    source = rtc.AudioSource(48_000, 1)
    echo = rtc.LocalAudioTrack.create_audio_track("echo", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    await room.local_participant.publish_track(echo, options)
    frames, squares, samples = 0, 0.0, 0
    loop = asyncio.get_running_loop()
    next_report = loop.time() + 1.0
    async for event in rtc.AudioStream(track, sample_rate=48_000, num_channels=1):
        frame = event.frame
        await source.capture_frame(frame)
        pcm = frame.data  # int16 samples
        frames += 1
        squares += sum(sample * sample for sample in pcm)
        samples += len(pcm)
        if loop.time() >= next_report:
            level = (squares / samples) ** 0.5 / 32768 if samples else 0.0
            heard = {"heard": {"frames": frames, "level": round(level, 4)}}
            await room.local_participant.publish_data(
                json.dumps(heard), reliable=True, topic=GREETING_TOPIC
            )
            squares, samples, next_report = 0.0, 0, loop.time() + 1.0


def _report(ctx: JobContext, metadata: dict[str, Any]) -> None:
    """For the end-to-end tests: what the entrypoint received, as a file they can read."""
    folder = os.environ.get("LKPS_EXAMPLE_REPORT_DIR")
    if folder:
        report = {
            "room": ctx.job.room.name,
            "job_id": ctx.job.id,
            "metadata": metadata,
            "pid": os.getpid(),
        }
        Path(folder, f"{ctx.job.id}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    run_app(server)  # was: cli.run_app(server); the same CLI, exiting 1 if the worker fails
