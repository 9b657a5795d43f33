"""An ARI client for the fake's own tests: REST calls with basic auth and an events websocket."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from .server import FakeAsterisk


class AriTestClient:
    """What an ARI application receives: REST responses and the events of one websocket."""

    def __init__(self, fake: FakeAsterisk, http: aiohttp.ClientSession) -> None:
        self.fake = fake
        self.http = http
        self.events: list[dict[str, Any]] = []
        self._socket: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(self, app: str = "calltracking") -> None:
        self._socket = await self.http.ws_connect(f"{self.fake.url}/ari/events?app={app}")
        self._reader = asyncio.create_task(self._read())
        await self.fake.wait_for(lambda: self.fake.websocket_count > 0)

    async def _read(self) -> None:
        assert self._socket is not None
        async for message in self._socket:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.events.append(json.loads(message.data))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._socket is not None:
            await self._socket.close()

    async def request(self, method: str, path: str, body: Any = None, **params: Any) -> tuple[int, Any]:
        """Send a REST request with query `params` and an optional JSON `body`; return the
        status and the decoded JSON answer (None when empty)."""
        async with self.http.request(method, f"{self.fake.url}/ari{path}", json=body,
                                     params={k: str(v) for k, v in params.items()}) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None

    def types(self, subject: str) -> list[str]:
        """Return the types of the received events about one channel, bridge or recording."""
        return [event["type"] for event in self.events if subject_of(event) == subject
                and event["type"] != "ChannelVarset"]

    async def wait_event(self, event_type: str, subject: str, timeout: float = 5.0) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for event in self.events:
                if event["type"] == event_type and subject_of(event) == subject:
                    return event
            return None

        await self.fake.wait_for(lambda: found() is not None, timeout)
        event = found()
        assert event is not None
        return event


def subject_of(event: dict[str, Any]) -> str | None:
    """Return the id an event is about: its channel (or Dial peer), else recording, else bridge."""
    for key in ("channel", "peer"):
        if isinstance(event.get(key), dict):
            return event[key]["id"]
    if isinstance(event.get("recording"), dict):
        return event["recording"]["name"]
    if isinstance(event.get("bridge"), dict):
        return event["bridge"]["id"]
    return None


def basic_auth(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@asynccontextmanager
async def ari_client(fake: FakeAsterisk, *, connect: bool = True) -> AsyncIterator[AriTestClient]:
    async with aiohttp.ClientSession(headers=basic_auth(fake.username, fake.password)) as http:
        client = AriTestClient(fake, http)
        if connect:
            await client.connect()
        try:
            yield client
        finally:
            await client.close()
