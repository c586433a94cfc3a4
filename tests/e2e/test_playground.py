"""The playground in a real browser, as a newcomer uses it: `lkps dev` with the real
livekit-server, `lkps dev agent` (the example agent), and Debian's headless Chromium with
a fake microphone playing a tone. The page signs in, lists the agent, starts a session,
joins; the agent appears, greets, echoes a data message, hears the microphone and plays
it back. The screenshot is kept: in the test's folder, and in LKPS_TEST_ARTIFACTS_DIR
when set (`.ci/run` sets it to .ci/artifacts and prints the path)."""

from __future__ import annotations

import json
import math
import os
import struct
import wave
from pathlib import Path
from typing import Any

import pytest

from lkps.cli.dev import DEV_AGENT_ID
from tests.browser import Tab, chromium_or_skip, headless_chromium
from tests.devstack import dev_stack

pytestmark = [pytest.mark.e2e]

ARTIFACTS_VARIABLE = "LKPS_TEST_ARTIFACTS_DIR"
STEP_TIMEOUT_MS = 120_000  # an agent's start on a busy 2-core machine


def tone(path: Path, seconds: float = 3.0, hertz: float = 440.0) -> Path:
    """A sine tone at half scale (16-bit mono, 48 kHz): what the fake microphone plays,
    in a loop."""
    rate = 48_000
    samples = (
        int(16_000 * math.sin(2 * math.pi * hertz * index / rate))
        for index in range(int(seconds * rate))
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(struct.pack("<h", sample) for sample in samples))
    return path


# Evaluated in the page: `until(check, what)` polls until `check()` is truthy.
UNTIL = f"""
const $ = (id) => document.getElementById(id);
const until = async (check, what) => {{
  const deadline = Date.now() + {STEP_TIMEOUT_MS};
  for (;;) {{
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) {{
      throw new Error(`not within {STEP_TIMEOUT_MS} ms: ${{what}}; status: ${{$("status").textContent}}`);
    }}
    await new Promise((resolve) => setTimeout(resolve, 250));
  }}
}};
const messages = () => [...document.querySelectorAll("#messages li")].map((li) => li.textContent);
"""


async def step(tab: Tab, body: str) -> Any:
    return await tab.evaluate(f"(async () => {{ {UNTIL}\n{body} }})()")


async def drive(tab: Tab) -> dict[str, Any]:
    await step(tab, 'await until(() => document.body.dataset.ready === "true", "the page script");')
    await step(
        tab,
        """
        $("user").value = "carol";
        $("sign-in-form").requestSubmit();
        await until(() => document.body.dataset.signedIn === "true", "signed in");
        """,
    )
    # The agent registers within its first seconds: refresh until the page shows it present.
    await step(
        tab,
        f"""
        await until(async () => {{
          $("refresh-agents").click();
          await new Promise((resolve) => setTimeout(resolve, 500));
          return document.querySelector('#agent-list li[data-present="true"] input[value="{DEV_AGENT_ID}"]');
        }}, "the agent listed as present");
        """,
    )
    await step(
        tab,
        """
        $("metadata").value = '{"language": "en", "n": 1.50}';
        $("session-form").requestSubmit();
        await until(() => document.querySelector('#participants li[data-kind="agent"]'), "the agent in the room");
        await until(() => messages().some((m) => m.includes('"greeting"')), "the greeting");
        $("data-text").value = "ping";
        $("data-form").requestSubmit();
        await until(() => messages().some((m) => m.includes('{"echo": "ping"}')), "the echo");
        $("mic").click();
        await until(() => $("mic").getAttribute("aria-pressed") === "true", "the microphone on");
        await until(() => messages().some((m) => /"heard": \\{"frames": [1-9]\\d*, "level": 0\\.\\d*[1-9]/.test(m)), "the agent hearing the microphone");
        await until(() => Number($("agent-level").value) > 0, "the agent's audio (the echo)");
        """,
    )
    result: dict[str, Any] = await step(
        tab,
        """
        return {
          status: $("status").textContent,
          participants: [...document.querySelectorAll("#participants li")].map((li) => li.dataset.kind),
          messages: messages(),
          raw: JSON.parse($("raw-response").textContent),
          claims: JSON.parse($("token-claims").textContent),
          agentLevel: Number($("agent-level").value),
          lifecycle: $("lifecycle-status").textContent,
        };
        """,
    )
    return result


@pytest.mark.filterwarnings("ignore:The HMAC key is:jwt.warnings.InsecureKeyLengthWarning")
async def test_the_playground_talks_to_the_example_agent_in_chromium(tmp_path: Path) -> None:
    chromium = chromium_or_skip()
    microphone = tone(tmp_path / "tone.wav")
    media_flags = (
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1200,2600",
    )
    with dev_stack(tmp_path) as stack:
        agent = stack.agent().start()
        try:
            with headless_chromium(chromium, tmp_path, media_flags) as browser:
                async with browser.tab(f"{stack.url}/playground") as tab:
                    try:
                        result = await drive(tab)
                    finally:
                        await keep_screenshot(tab, tmp_path)
        finally:
            agent.stop()
    assert sorted(result["participants"]) == ["agent", "standard"]
    greeting = next(json.loads(m.split(": ", 1)[1]) for m in result["messages"] if "greeting" in m)
    assert greeting["metadata"] == {"language": "en", "n": 1.5}
    assert result["claims"]["sub"] == "carol"
    assert result["claims"]["video"]["room"] == result["raw"]["room_name"]
    assert result["raw"]["livekit_url"] == stack.livekit_url
    assert result["agentLevel"] > 0
    assert result["lifecycle"]  # steps, or a line saying this instance records none


async def keep_screenshot(tab: Tab, workdir: Path) -> None:
    """Into the test's folder, and into LKPS_TEST_ARTIFACTS_DIR when set."""
    shot = workdir / "playground.png"
    await tab.screenshot(shot)
    if folder := os.environ.get(ARTIFACTS_VARIABLE):
        Path(folder).mkdir(parents=True, exist_ok=True)
        Path(folder, "playground.png").write_bytes(shot.read_bytes())
