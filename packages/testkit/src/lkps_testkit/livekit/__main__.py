"""Run the LiveKit double as a process, for end-to-end tests:

    python -m lkps_testkit.livekit --port 7880 --api-key devkey --api-secret S

The secret may instead come from `LIVEKIT_API_SECRET` (and the key from
`LIVEKIT_API_KEY`), LiveKit's own variables. With `--port 0` the system picks a port;
the process prints one line, `LIVEKIT_DOUBLE_URL=ws://host:port`, once it accepts
connections, and stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys

from lkps_testkit.livekit.app import serve, shutdown
from lkps_testkit.livekit.engine import Engine
from lkps_testkit.livekit.tokens import KeyRing

READY_PREFIX = "LIVEKIT_DOUBLE_URL="


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lkps_testkit.livekit", description="A LiveKit server double for tests."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7880)
    parser.add_argument("--api-key", default=os.environ.get("LIVEKIT_API_KEY", "devkey"))
    parser.add_argument(
        "--api-secret",
        default=os.environ.get("LIVEKIT_API_SECRET"),
        help="the API secret (default: $LIVEKIT_API_SECRET)",
    )
    parser.add_argument(
        "--keep-workers-on-token-expiry",
        action="store_true",
        help="do not close a worker's socket when its token expires (LiveKit's behaviour)",
    )
    parser.add_argument("--assignment-timeout", type=float, default=10.0)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    if not args.api_secret:
        parser.error("an API secret is required: --api-secret or LIVEKIT_API_SECRET")
    return args


async def run(args: argparse.Namespace) -> None:
    engine = Engine(
        KeyRing({args.api_key: args.api_secret}),
        close_workers_on_token_expiry=not args.keep_workers_on_token_expiry,
        assignment_timeout=args.assignment_timeout,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    runner = await serve(engine, sock)
    print(f"{READY_PREFIX}{engine.url}", flush=True)
    try:
        await stopping.wait()
    finally:
        await shutdown(engine, runner)
        sock.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
