"""Request heads past LKPS_MAX_HEADER_* get 431 and a closed connection, under `lkps serve`
with either uvicorn parser and under `lkps dev`, after reading about the limit.

Raw sockets on 127.0.0.1: a client library would refuse to send what is tested, or would
send it all before reading. A big header is streamed in chunks, and the test stops
sending once the server has answered or closed; what it managed to send by then shows
how much the server read.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from lkps_testkit import EntraDouble, ServerThread
from tests.cli.test_serve import servable_environment
from tests.processes import (
    LKPS,
    READY_TIMEOUT,
    Replica,
    answers_200,
    clean_environment,
    free_port,
    started_process,
)

pytestmark = pytest.mark.cli

LINE = 16_384  # LKPS_MAX_HEADER_LINE_BYTES' default: one header's `name: value`
TOTAL = 65_536  # LKPS_MAX_HEADER_TOTAL_BYTES': the request head, as received
COUNT = 100  # LKPS_MAX_HEADER_COUNT'
MB = 1_000_000
CHUNK = 65_536


@dataclass
class Exchange:
    status: int | None
    headers: dict[str, str]
    body: bytes
    sent: int  # bytes of the request the client could send before the server closed
    closed: bool  # the server closed the connection after its answer


def parse(raw: bytes) -> tuple[int | None, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head:
        return None, {}, b""
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def exchange(port: int, *parts: bytes, repeat: tuple[bytes, int] | None = None) -> Exchange:
    """Send `parts`, then `repeat[0]` `repeat[1]` times (a header streamed in chunks), then
    read until the server closes. Sending stops as soon as the server answers or closes;
    a server that neither reads nor answers fails the test by timeout instead of hanging."""
    sent, received = 0, b""
    pieces = iter([*parts, *([repeat[0]] * repeat[1] if repeat else [])])
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHUNK)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for piece in pieces:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break
                sock.sendall(piece)
                sent += len(piece)
        closed = False
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65_536):
                received += chunk
            closed = True
    status, headers, body = parse(received)
    # A reset after the answer is a close too: the server closed with the rest of the
    # request unread, so its kernel answered what came next with RST.
    return Exchange(status, headers, body, sent, closed or status is not None)


def read_answer(sock: socket.socket) -> int | None:
    """One response on a kept-alive connection: its status (None if closed first)."""
    received = b""
    while b"\r\n\r\n" not in received:
        if not (chunk := sock.recv(65_536)):
            return None
        received += chunk
    status, headers, body = parse(received)
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65_536)
    return status


def request(*headers: tuple[str, str], target: str = "/api/health") -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def assert_refused(answer: Exchange, message_part: str) -> None:
    assert answer.status == 431, answer
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["connection"] == "close"
    body = json.loads(answer.body[: int(answer.headers["content-length"])])
    assert set(body) == {"error", "message", "request_id"}
    assert body["error"] == "header_fields_too_large"
    assert message_part in body["message"]
    assert body["request_id"] == answer.headers["x-request-id"]
    assert answer.closed


def assert_served(answer: Exchange) -> None:
    assert answer.status == 200, answer
    assert json.loads(answer.body)["status"] == "ok"


@pytest.fixture(scope="module", params=["httptools", "h11"])
def lkps_port(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _entra_session: EntraDouble,
    entra_server: ServerThread,
) -> Iterator[int]:
    """One `lkps serve` per uvicorn parser, with the default limits."""
    tmp_path = tmp_path_factory.mktemp(f"serve-{request.param}")
    port = free_port()
    env = servable_environment(
        tmp_path,
        _entra_session,
        entra_server,
        LKPS_PORT=str(port),
        LKPS_METRICS_PORT="0",
        LKPS_HTTP_IMPLEMENTATION=request.param,
    )
    replica = Replica(f"serve-{request.param}", env, tmp_path).start()
    try:
        replica.wait_ready()
        yield port
    finally:
        replica.stop()


def test_a_1_mb_header_is_refused(lkps_port: int) -> None:
    answer = exchange(lkps_port, request(("X-Big", "a" * MB)))
    assert_refused(answer, f"larger than {TOTAL} bytes")


def test_a_100_mb_header_is_refused_after_about_the_limit(lkps_port: int) -> None:
    start = request()[: -len(b"\r\n")] + b"X-Big: "  # the head, open at a header value
    answer = exchange(lkps_port, start, repeat=(b"a" * CHUNK, 100 * MB // CHUNK))
    assert_refused(answer, f"larger than {TOTAL} bytes")
    # What the client could send: the limit, plus what the sockets' buffers took in
    # before the server's close reached it.
    assert answer.sent < 10 * MB, answer.sent


def test_a_1_mb_request_target_is_refused(lkps_port: int) -> None:
    # The request line counts toward the total; httptools would otherwise grow it whole.
    answer = exchange(lkps_port, request(target="/api/health?" + "a" * MB))
    assert_refused(answer, f"larger than {TOTAL} bytes")


def test_one_header_line_over_the_limit_is_refused(lkps_port: int) -> None:
    over = "a" * (LINE - len("X-Long: ") + 1)
    assert_refused(exchange(lkps_port, request(("X-Long", over))), f"longer than {LINE} bytes")


def test_more_headers_than_the_limit_are_refused(lkps_port: int) -> None:
    # Host, Connection and 99 more: one over.
    headers = [(f"X-Filler-{n}", "x") for n in range(COUNT - 1)]
    assert_refused(exchange(lkps_port, request(*headers)), f"more than {COUNT} headers")


def test_lines_each_within_the_limit_over_the_total_are_refused(lkps_port: int) -> None:
    headers = [(f"X-Long-{n}", "a" * (LINE - 20)) for n in range(4)]
    assert_refused(exchange(lkps_port, request(*headers)), f"larger than {TOTAL} bytes")


def test_a_head_just_within_every_limit_is_served(lkps_port: int) -> None:
    longest = [(f"X-Long-{n}", "a" * (LINE - len(f"X-Long-{n}: "))) for n in range(3)]
    names = [f"X-Filler-{n}" for n in range(COUNT - 2 - len(longest))]
    spare = TOTAL - len(request(*longest, *[(name, "") for name in names]))
    head = request(*longest, *[(name, "x" * (spare // len(names))) for name in names])
    assert TOTAL - len(names) <= len(head) <= TOTAL
    assert_served(exchange(lkps_port, head))


def test_each_request_on_a_connection_has_its_own_allowance(lkps_port: int) -> None:
    """Keep-alive: a head is counted from its own start; the second, too big, is refused."""
    fine = request(("X-Long", "a" * (LINE - 20))).replace(b"Connection: close", b"X-A: b")
    with socket.create_connection(("127.0.0.1", lkps_port), timeout=30) as sock:
        for _ in range(5):  # 5 x 16 KB: more than the total, across requests
            sock.sendall(fine)
            assert read_answer(sock) == 200
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request(("X-Big", "a" * MB)))
        assert read_answer(sock) == 431


def test_a_pipelined_head_over_the_count_is_refused(lkps_port: int) -> None:
    first = request().replace(b"Connection: close", b"X-A: b")
    second = request(*[(f"X-Filler-{n}", "x") for n in range(COUNT)])
    answer = exchange(lkps_port, first + second)
    assert answer.status == 200  # the first request's answer
    assert b"HTTP/1.1 431 " in answer.body
    assert answer.closed


def test_health_answers_while_a_big_head_is_arriving(lkps_port: int) -> None:
    """A head held open just under the limit, then a 100 MB one streamed: health answers
    throughout (how fast is bench/headers.py's to measure)."""
    start = request()[: -len(b"\r\n")] + b"X-Big: "
    with socket.create_connection(("127.0.0.1", lkps_port), timeout=30) as held:
        held.sendall(start + b"a" * (TOTAL - len(start) - 100))
        assert [httpx.get(f"http://127.0.0.1:{lkps_port}/api/health").status_code] * 10 == [
            200
        ] * 10
        streamed: list[Exchange] = []
        sender = threading.Thread(
            target=lambda: streamed.append(
                exchange(lkps_port, start, repeat=(b"a" * CHUNK, 100 * MB // CHUNK))
            )
        )
        sender.start()
        answers: list[int] = []
        while sender.is_alive() or not answers:
            answers.append(httpx.get(f"http://127.0.0.1:{lkps_port}/api/health").status_code)
        sender.join()
        assert set(answers) == {200}
        assert_refused(streamed[0], "larger than")
        held.sendall(b"a" * 200)
        assert read_answer(held) == 431


def test_lkps_dev_refuses_a_big_head_too(tmp_path: Path) -> None:
    port = free_port()
    with started_process(
        [*LKPS, "dev", "--port", str(port), "--state-dir", str(tmp_path / "state")],
        log_path=tmp_path / "lkps-dev.log",
        ready=lambda: answers_200(f"http://127.0.0.1:{port}/api/health"),
        what="lkps dev",
        timeout=READY_TIMEOUT,
        env=clean_environment(),
        cwd=tmp_path,
    ):
        assert_refused(exchange(port, request(("X-Big", "a" * MB))), "larger than")
        assert_served(exchange(port, request(("X-Fine", "a" * 1000))))


@pytest.mark.parametrize("lkps_port", ["httptools"], indirect=True)  # uvicorn's, either parser
def test_an_idle_connection_outlives_the_clients_keep_alive_expiry(lkps_port: int) -> None:
    """LKPS_HTTP_KEEP_ALIVE_SECONDS (75 s): a connection idle for longer than httpx's
    keep-alive expiry (5 s, which was also uvicorn's timeout) is still served. With both at
    5 s, a client reusing a connection just as the server closed it got no answer at all
    (a fault test's flood saw one such request in 3,956)."""
    kept_alive = request().replace(b"Connection: close", b"Connection: keep-alive")
    client_expiry = httpx.Limits(max_connections=None).keepalive_expiry
    assert client_expiry is not None
    with socket.create_connection(("127.0.0.1", lkps_port), timeout=30) as sock:
        sock.sendall(kept_alive)
        assert read_answer(sock) == 200
        time.sleep(client_expiry + 1.0)
        sock.sendall(kept_alive)
        assert read_answer(sock) == 200
