"""The dashboard in real headless Chromium, driven over the DevTools protocol on loopback.

Screenshots of each page go to $PBX_BRIDGE_SCREENSHOTS when set (else the test's temporary
folder), for a person to look at.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import wave
from base64 import b64decode
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.admin.conftest import PASSWORD, World

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--mute-audio",
    "--autoplay-policy=no-user-gesture-required",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
    "--window-size=1400,1000",
]


class Browser:
    """A minimal DevTools protocol client: commands by id, events ignored."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self.ids = itertools.count(1)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        command_id = next(self.ids)
        await self.socket.send_json({"id": command_id, "method": method, "params": params})
        while True:
            message = await self.socket.receive_json(timeout=30)
            if message.get("id") == command_id:
                if "error" in message:
                    raise AssertionError(f"{method} failed: {message['error']}")
                return message["result"]

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} raised {result['exceptionDetails']}")
        return result["result"].get("value")

    async def open(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_until("document.readyState === 'complete' && location.href !== 'about:blank'")

    async def wait_until(self, condition: str) -> None:
        for _ in range(200):
            if await self.evaluate(f"Boolean({condition})"):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {condition}")

    async def screenshot(self, path: Path) -> None:
        result = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(b64decode(result["data"]))


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    profile = tmp_path / "chromium-profile"
    process = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(200):
            if port_file.exists() and port_file.read_text().strip():
                break
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().splitlines()[0])
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                pages = [target for target in await response.json() if target["type"] == "page"]
            async with session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as socket:
                client = Browser(socket)
                await client.send("Page.enable")
                yield client
    finally:
        process.terminate()
        process.wait(timeout=10)


def _screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("PBX_BRIDGE_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write_silent_wav(path: Path) -> None:
    with wave.open(str(path), "wb") as output:
        output.setnchannels(1)
        output.setsampwidth(2)
        output.setframerate(8000)
        output.writeframes(b"\x00\x00" * 8000)


async def _login(browser: Browser, base: str) -> None:
    await browser.open(f"{base}dashboard/login")
    await browser.evaluate(
        f"document.getElementById('login').value = 'viewer';"
        f"document.getElementById('password').value = {json.dumps(PASSWORD)};"
        "document.getElementById('login-button').click(); true"
    )
    await browser.wait_until("location.pathname === '/dashboard' && document.readyState === 'complete'")


async def test_browser_login_filter_play_and_charts(world: World, browser: Browser, tmp_path: Path) -> None:
    _write_silent_wav(world.recordings / "calltracking/2026/03/10/c1.wav")
    base = str(world.client.make_url("/"))
    shots = _screenshots(tmp_path)
    suffix = "sqlite" if "sqlite" in world.database.url else "postgres"

    await _login(browser, base)
    assert await browser.evaluate("document.querySelectorAll('#journal tbody tr').length") == 3
    assert await browser.evaluate("Array.from(document.querySelectorAll('.visit')).some(cell => cell.textContent.includes('<script>alert(1)</script>'))")
    assert await browser.evaluate("window.__xss === undefined")
    await browser.screenshot(shots / f"journal-{suffix}.png")

    await browser.evaluate(
        "document.getElementById('outcome-filter').value = 'answered'; document.getElementById('apply').click(); true"
    )
    await browser.wait_until("location.search.includes('outcome=answered') && document.readyState === 'complete'")
    assert await browser.evaluate("document.querySelectorAll('#journal tbody tr').length") == 1

    played = await browser.evaluate(
        "(async () => { const audio = document.querySelector('audio'); await audio.play();"
        " await new Promise(resolve => setTimeout(resolve, 300));"
        " return {error: audio.error && audio.error.code, time: audio.currentTime, duration: audio.duration}; })()"
    )
    assert played["error"] is None
    assert played["duration"] == pytest.approx(1.0, abs=0.01)
    assert played["time"] > 0
    await browser.screenshot(shots / f"journal-filtered-{suffix}.png")

    await browser.open(f"{base}dashboard/reports?from=2026-03-01&to=2026-03-31&lang=en")
    assert await browser.evaluate("document.querySelectorAll('svg').length") == 3
    assert await browser.evaluate("document.querySelector('#chart-calls rect').getBoundingClientRect().width") > 0
    assert await browser.evaluate("document.querySelector('h1').textContent") == "Sources"
    await browser.screenshot(shots / f"reports-{suffix}.png")

    await browser.open(f"{base}dashboard/pools")
    assert await browser.evaluate("document.querySelector('h1').textContent") == "Number pools"
    await browser.screenshot(shots / f"pools-{suffix}.png")
