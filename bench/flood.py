"""An unauthenticated flood against LKPS: how much it grows the audit store, and whether
valid session starts keep working meanwhile. 127.0.0.1 only; everything it starts stops.

    python3 -m uv run python bench/flood.py                # 60 s flood
    python3 -m uv run python bench/flood.py --duration 20

`lkps serve` on a fresh PostgreSQL database (as bench/run.py sets it up), the bench agent
kept present; then at once, for --duration seconds: wrk at full speed with garbage
tokens (forged headers whose `alg` quotes a few hundred bytes of varying text, so every
reason differs), and bench/paced.py sending valid session starts at --rate. Before and
after: the audit table's size (`pg_total_relation_size`), its rows, and the WAL written.
The issue's target: under 1 MB of audit store for a 60 s flood, valid starts all 200;
the flood's share is its rejections' records (the valid starts add records of their own).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import secrets
import sys
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs
from run import (
    BENCH,
    PG_HOST,
    PG_PASSWORD,
    PG_PORT,
    PG_USER,
    ROOT,
    SESSION_PATH,
    AgentKeeper,
    bench_database,
    ensure_postgres,
    lkps_uvicorn,
    make_identities,
    say,
    wait_ready,
)

from lkps_testkit import EntraDouble, ServerThread


def garbage_tokens(count: int) -> list[str]:
    """Tokens LKPS must refuse, each quoting different text in its header."""
    tokens = []
    for _ in range(count):
        header = {"alg": "HS256-" + secrets.token_hex(150), "typ": "JWT"}
        encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).decode().rstrip("=")
        tokens.append(f"{encoded}.e30.{secrets.token_urlsafe(32)}")
    return tokens


async def store_size(database: str) -> dict[str, int]:
    connection = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD, database=database
    )
    try:
        row = await connection.fetchrow(
            "SELECT pg_total_relation_size('audit_records') AS bytes,"
            " (SELECT count(*) FROM audit_records) AS records,"
            " (SELECT count(*) FROM audit_records WHERE status = 401) AS rejections,"
            " (SELECT coalesce(sum(pg_column_size(r.*)), 0) FROM audit_records r"
            "  WHERE status = 401) AS rejection_bytes,"
            " pg_current_wal_lsn() - '0/0'::pg_lsn AS wal"
        )
        assert row is not None
        return {name: int(row[name]) for name in row.keys()}  # noqa: SIM118 (a Record iterates values)
    finally:
        await connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=50.0, help="valid session starts/s")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--out", type=Path, default=BENCH / "out" / "flood")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    children = procs.Children(out)
    try:
        say(f"PostgreSQL: {ensure_postgres()}")
        with contextlib.ExitStack() as stack:
            database = stack.enter_context(bench_database())
            entra = EntraDouble()
            entra_server = stack.enter_context(ServerThread(entra.asgi_app()))
            ids = make_identities(entra, entra_server.url, out)
            garbage = out / "garbage-tokens.txt"
            garbage.write_text("\n".join(garbage_tokens(2000)) + "\n")
            spec = lkps_uvicorn(ids, database, args.workers, out, False, "lkps-flood")
            server = children.start(spec.name, spec.argv, env=spec.env, cwd=ROOT)
            wait_ready(spec, server)
            stack.enter_context(AgentKeeper(spec.url, ids.agent_token))
            before = asyncio.run(store_size(database))
            say(f"before: {before}")
            flood = children.start(
                "wrk-flood",
                [
                    "wrk",
                    "-t2",
                    f"-c{args.connections}",
                    f"-d{args.duration:.0f}s",
                    "-s",
                    str(BENCH / "session_start.lua"),
                    spec.url,
                    "--",
                    str(garbage),
                    ids.body,
                    SESSION_PATH,
                ],
                capture=True,
            )
            valid = children.start(
                "paced-valid",
                [
                    sys.executable,
                    str(BENCH / "paced.py"),
                    "--port",
                    str(spec.port),
                    "--tokens",
                    str(ids.tokens_file),
                    "--body",
                    ids.body,
                    "--rate",
                    str(args.rate),
                    "--duration",
                    str(args.duration - 4),
                    "--warmup",
                    "2",
                ],
                capture=True,
            )
            flood_out, _ = flood.communicate(timeout=args.duration + 60)
            valid_out, _ = valid.communicate(timeout=args.duration + 60)
            after = asyncio.run(store_size(database))
            say(f"after: {after}")
    finally:
        children.stop_all()
    line = next(ln for ln in flood_out.splitlines() if ln.startswith("BENCH_JSON "))
    raw: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    paced: dict[str, Any] = json.loads(valid_out.strip().splitlines()[-1])
    grown = after["bytes"] - before["bytes"]
    # The valid session starts running alongside add their own records; the flood's
    # share is its rejections' records.
    flood_bytes = after["rejection_bytes"] - before["rejection_bytes"]
    result = {
        "duration_s": args.duration,
        "flood_requests": raw["requests"],
        "flood_rps": round(raw["requests"] / (raw["duration_us"] / 1e6)),
        "flood_non_401": "see wrk: every flood answer is non-2xx",
        "audit_store_growth_bytes": grown,
        "audit_records_added": after["records"] - before["records"],
        "rejection_records_added": after["rejections"] - before["rejections"],
        "rejection_record_bytes": flood_bytes,
        "wal_bytes": after["wal"] - before["wal"],
        "valid_starts": {
            "achieved_rate": paced["achieved_rate"],
            "non_2xx": paced["non_2xx"],
            "errors": paced["errors"],
            "latency_ms": paced["latency_ms"],
        },
    }
    (out / "flood.json").write_text(json.dumps(result, indent=2))
    say(json.dumps(result, indent=2))
    ok = flood_bytes < 1_000_000 and paced["non_2xx"] == 0
    say(
        f"a {args.duration:.0f} s flood of {result['flood_rps']:,} rejected tokens/s left "
        f"{result['rejection_records_added']} records, {flood_bytes / 1e3:.1f} kB (target "
        f"< 1 MB); the store grew {grown / 1e6:.2f} MB in all, the rest the "
        f"{result['audit_records_added'] - result['rejection_records_added']} records of "
        f"valid starts at {args.rate:.0f}/s alongside (non-2xx {paced['non_2xx']}): "
        f"{'MET' if ok else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
