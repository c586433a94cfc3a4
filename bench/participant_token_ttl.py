"""How a client fares once LKPS's participant token has expired, against a real
livekit-server: the measurement behind `LKPS_PARTICIPANT_TOKEN_TTL`'s least value.

    python3 -m uv run python bench/participant_token_ttl.py               # about 100 s
    python3 -m uv run python bench/participant_token_ttl.py --after 40 95 660 --ttl 30

For each --after (seconds after the token was minted; all run at once, one room each):
LKPS mints a --ttl participant token (the 30 s least value by default), a client joins on
it with the rtc SDK, waits until that moment, then simulates a resume (signal reconnect)
and a full reconnect, timing each; finally the original token tries to join again
(LiveKit accepts a token up to a minute past its `exp`). Prints one row per --after.
The correctness behind it (LiveKit's refreshed token on join, its grants, that it
reconnects) is tested in seconds: tests/realserver/test_participant_token_ttl.py.

The livekit-server binary is `LKPS_LIVEKIT_SERVER_BIN`, or what `scripts/livekit-server`
built into .cache/; it runs on free 127.0.0.1 ports with a config of its own in a
temporary folder, stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from livekit import rtc
from livekit.rtc._proto.room_pb2 import SimulateScenarioKind
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.realserver.conftest import RealLiveKit, running_livekit

from lkps.clock import SystemClock
from lkps.livekit.tokens import TokenMinter, dispatch_room_config

STEP_TIMEOUT = 60.0


@dataclass
class Outcome:
    after: float
    resume: str
    full: str
    original_joins: str


async def reconnect(room: rtc.Room, scenario: str, reconnected: asyncio.Event) -> str:
    """'reconnected in N s', or what went wrong."""
    reconnected.clear()
    started = time.monotonic()
    try:
        await room.simulate_scenario(SimulateScenarioKind.Value(scenario))
        await asyncio.wait_for(reconnected.wait(), STEP_TIMEOUT)
    except Exception as error:
        return f"failed: {error!r}"
    if room.connection_state != rtc.ConnectionState.CONN_CONNECTED:
        return f"not connected ({room.connection_state})"
    return f"reconnected in {time.monotonic() - started:.1f} s"


async def scenario(livekit: RealLiveKit, ttl: int, after: float) -> Outcome:
    minter = TokenMinter(livekit.api_key, SecretStr(livekit.api_secret), SystemClock())
    minted = time.monotonic()
    token = minter.participant_token(
        identity="alice",
        name="Alice",
        room=f"lkps-ttl-bench-{after:g}-{time.monotonic_ns()}",
        room_config=dispatch_room_config(
            "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "", max_participants=2
        ),
        ttl=timedelta(seconds=ttl),
    )
    room = rtc.Room()
    reconnected = asyncio.Event()
    room.on("reconnected", lambda: reconnected.set())
    await asyncio.wait_for(room.connect(livekit.url, token.jwt), STEP_TIMEOUT)
    try:
        await asyncio.sleep(max(0.0, minted + after - time.monotonic()))
        resume = await reconnect(room, "SIMULATE_SIGNAL_RECONNECT", reconnected)
        full = await reconnect(room, "SIMULATE_FULL_RECONNECT", reconnected)
        again = rtc.Room()
        try:
            await asyncio.wait_for(again.connect(livekit.url, token.jwt), STEP_TIMEOUT)
            original = "yes"
            await again.disconnect()
        except rtc.ConnectError as error:
            status = "401: " if "401" in str(error) else ""
            original = f"no ({status}{str(error).rsplit('error: ', 1)[-1]})"
    finally:
        await asyncio.wait_for(room.disconnect(), STEP_TIMEOUT)
    return Outcome(after, resume, full, original)


async def measure(livekit: RealLiveKit, ttl: int, afters: list[float]) -> list[Outcome]:
    return list(await asyncio.gather(*(scenario(livekit, ttl, after) for after in afters)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ttl", type=int, default=30, help="the token's lifetime, seconds")
    parser.add_argument(
        "--after",
        type=float,
        nargs="+",
        default=[40.0, 95.0],
        help="seconds after minting to reconnect (default: 10 s and 65 s past exp)",
    )
    args = parser.parse_args()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="lkps-ttl-bench-") as folder,
            running_livekit(Path(folder)) as livekit,
        ):
            outcomes = asyncio.run(measure(livekit, args.ttl, args.after))
    except pytest.skip.Exception as missing:  # no livekit-server binary: how to get one
        sys.exit(str(missing))
    print(f"participant token of {args.ttl} s against {livekit.url}")
    print("| after minting | past exp | resume | full reconnect | the original token joins? |")
    print("|---|---|---|---|---|")
    for o in outcomes:
        print(
            f"| {o.after:g} s | {o.after - args.ttl:g} s | {o.resume} | {o.full} | {o.original_joins} |"
        )


if __name__ == "__main__":
    main()
