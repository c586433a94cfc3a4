"""A real headless Chromium for the tests, driven over the DevTools protocol.

Debian's `chromium` (installed by scripts/services), started with its own profile in a
temporary folder and a DevTools port the browser picks itself (it writes it to
`DevToolsActivePort`); nothing is downloaded at run time. `Browser.evaluate_in` opens a
page, waits for its load event, and evaluates a JavaScript expression in it, awaiting a
promise: what the page's own script would see, CORS included, since the expression runs
with the page's origin.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tests.backends import service_missing
from tests.processes import ManagedProcess, wait_until_ready

CHROMIUM_NAMES = ("chromium", "chromium-browser")
# No first-run UI, no traffic of the browser's own (updates, sync, QUIC probes), no GPU.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # the tests run as root in containers
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    # Every host name unresolvable: pages reach only what they name by IP (127.0.0.1), so
    # a page that needs the internet (a CDN) fails here as it would offline.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
START_TIMEOUT = 60.0  # a cold start on a busy 2-core machine
# A page's load and one evaluation: generous, since only a broken run comes near it.
PAGE_TIMEOUT = 60.0


def chromium_or_skip() -> str:
    """The Chromium executable; the test is skipped (failed under
    LKPS_TEST_REQUIRE_SERVICES=1) when there is none."""
    for name in CHROMIUM_NAMES:
        if path := shutil.which(name):
            return path
    service_missing("Chromium", "PATH", FileNotFoundError(" or ".join(CHROMIUM_NAMES)))
    raise AssertionError("unreachable")  # service_missing skips or fails


class DevToolsError(RuntimeError):
    """The browser answered a command with an error, or the page's script threw."""


class Browser:
    def __init__(self, websocket_url: str) -> None:
        self.websocket_url = websocket_url

    async def evaluate_in(self, page_url: str, expression: str) -> Any:
        """Open `page_url` in a new tab, wait for its load event, evaluate `expression`
        there (awaiting a promise), close the tab; the value, as JSON."""
        async with _DevTools.connected(self.websocket_url) as devtools:
            target = await devtools.call("Target.createTarget", url="about:blank")
            target_id = target["targetId"]
            attached = await devtools.call(
                "Target.attachToTarget", targetId=target_id, flatten=True
            )
            session = attached["sessionId"]
            try:
                await devtools.call("Page.enable", session=session)
                loaded = devtools.expect("Page.loadEventFired", session)
                navigated = await devtools.call("Page.navigate", session=session, url=page_url)
                if "errorText" in navigated:
                    raise DevToolsError(f"{page_url}: {navigated['errorText']}")
                await asyncio.wait_for(loaded, PAGE_TIMEOUT)
                result = await devtools.call(
                    "Runtime.evaluate",
                    session=session,
                    expression=expression,
                    awaitPromise=True,
                    returnByValue=True,
                )
            finally:
                await devtools.call("Target.closeTarget", targetId=target_id)
        if "exceptionDetails" in result:
            raise DevToolsError(json.dumps(result["exceptionDetails"]))
        return result["result"].get("value")

    @asynccontextmanager
    async def tab(self, page_url: str) -> AsyncIterator[Tab]:
        """`page_url` open in a new tab (its load event seen) for the block: scripts
        evaluated in it one after another, screenshots; closed on leaving."""
        async with _DevTools.connected(self.websocket_url) as devtools:
            target = await devtools.call("Target.createTarget", url="about:blank")
            target_id = target["targetId"]
            attached = await devtools.call(
                "Target.attachToTarget", targetId=target_id, flatten=True
            )
            tab = Tab(devtools, attached["sessionId"])
            try:
                await devtools.call("Page.enable", session=tab.session)
                loaded = devtools.expect("Page.loadEventFired", tab.session)
                navigated = await devtools.call("Page.navigate", session=tab.session, url=page_url)
                if "errorText" in navigated:
                    raise DevToolsError(f"{page_url}: {navigated['errorText']}")
                await asyncio.wait_for(loaded, PAGE_TIMEOUT)
                yield tab
            finally:
                await devtools.call("Target.closeTarget", targetId=target_id)


class Tab:
    """One open page of a `Browser`."""

    def __init__(self, devtools: _DevTools, session: str) -> None:
        self._devtools = devtools
        self.session = session

    async def evaluate(self, expression: str) -> Any:
        """`expression` evaluated in the page (a promise awaited); its value, as JSON."""
        result = await self._devtools.call(
            "Runtime.evaluate",
            session=self.session,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            thrown = details.get("exception", {}).get("description") or json.dumps(details)
            raise DevToolsError(thrown)
        return result["result"].get("value")

    async def screenshot(self, path: Path) -> None:
        """The whole page as PNG, into `path`."""
        shot = await self._devtools.call(
            "Page.captureScreenshot", session=self.session, format="png", captureBeyondViewport=True
        )
        path.write_bytes(base64.b64decode(shot["data"]))


class _DevTools:
    """One DevTools connection: numbered commands, their answers, and awaited events."""

    def __init__(self, connection: ClientConnection) -> None:
        self._connection = connection
        self._ids = itertools.count(1)
        self._answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: dict[tuple[str, str | None], asyncio.Future[dict[str, Any]]] = {}

    @classmethod
    @asynccontextmanager
    async def connected(cls, url: str) -> AsyncIterator[_DevTools]:
        async with connect(url, max_size=None) as connection:
            devtools = cls(connection)
            reader = asyncio.create_task(devtools._read())
            try:
                yield devtools
            finally:
                reader.cancel()

    async def call(self, method: str, *, session: str | None = None, **params: Any) -> Any:
        number = next(self._ids)
        answer = self._answers[number] = asyncio.get_running_loop().create_future()
        message: dict[str, Any] = {"id": number, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        await self._connection.send(json.dumps(message))
        reply = await asyncio.wait_for(answer, PAGE_TIMEOUT)
        if "error" in reply:
            raise DevToolsError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def expect(self, method: str, session: str | None) -> asyncio.Future[dict[str, Any]]:
        """A future for the next `method` event of `session`; ask before causing it."""
        future = self._events[method, session] = asyncio.get_running_loop().create_future()
        return future

    async def _read(self) -> None:
        async for raw in self._connection:
            message = json.loads(raw)
            if "id" in message:
                answer = self._answers.pop(message["id"], None)
                if answer is not None and not answer.done():
                    answer.set_result(message)
                continue
            event = self._events.pop((message.get("method"), message.get("sessionId")), None)
            if event is not None and not event.done():
                event.set_result(message.get("params", {}))


@contextmanager
def headless_chromium(
    executable: str, workdir: Path, extra_flags: Sequence[str] = ()
) -> Iterator[Browser]:
    """Chromium with a fresh profile under `workdir` (and `extra_flags`), stopped (its
    whole process group) on leaving."""
    profile = workdir / "chromium-profile"
    profile.mkdir()
    port_file = profile / "DevToolsActivePort"
    process = ManagedProcess(
        "chromium",
        [executable, *CHROMIUM_FLAGS, *extra_flags, f"--user-data-dir={profile}", "about:blank"],
        env={"HOME": str(workdir), "PATH": "/usr/bin:/bin"},
        workdir=workdir,
    )
    process.start()
    try:
        wait_until_ready(
            lambda: len(_read_lines(port_file)) >= 2,
            running=lambda: process.running,
            what="chromium",
            timeout=START_TIMEOUT,
            log=process.log_text,
        )
        port, path = _read_lines(port_file)[:2]
        yield Browser(f"ws://127.0.0.1:{port}{path}")
    finally:
        process.stop(timeout=10)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []
