"""A small ARI server on 127.0.0.1 that records requests and responds as Asterisk does.

Tests set the response per request with `AriServer.reply`; anything else gets 204 No Content. The
websocket endpoint `/ari/events` accepts connections, and tests push frames, drop the sockets,
reject the handshake or stop listening altogether.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

USERNAME = "pbx-bridge"
# A distinctive password so a test can search logs and messages for it.
PASSWORD = "Zq7-secret-ARI-password"
APP = "calltracking"


@dataclass
class RecordedRequest:
    method: str
    raw_path: str
    query: dict[str, str]
    body: Any
    authorization: str | None


class AriServer:
    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.event_connections: list[web.Request] = []
        # (method, raw path) -> (status, JSON body, or text for a non-JSON body).
        self.replies: dict[tuple[str, str], tuple[int, Any]] = {}
        # Set to a status such as 401 to reject websocket handshakes.
        self.reject_events_with: int | None = None
        # Seconds the websocket endpoint waits before it completes the handshake.
        self.events_delay = 0.0
        self.rest_delay = 0.0
        self.rest_in_flight = 0
        self.rest_peak_in_flight = 0
        # False makes the websocket ignore pings, as a dead peer or a stuck proxy would.
        self.autoping = True
        self.reset_rest_connections = False
        self.port = 0
        self._websockets: list[web.WebSocketResponse] = []
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def open_websockets(self) -> list[web.WebSocketResponse]:
        return [websocket for websocket in self._websockets if not websocket.closed]

    def reply(self, method: str, raw_path: str, status: int, body: Any = None) -> None:
        self.replies[(method, raw_path)] = (status, body)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ari/events", self._events)
        app.router.add_route("*", "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await self.listen()

    async def listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await self._site.start()
        self.port = self._site._server.sockets[0].getsockname()[1]

    async def stop_listening(self) -> None:
        """Close the listening socket, so connects are refused, and then every websocket."""
        assert self._site is not None
        await self._site.stop()
        await self.drop_websockets()

    async def drop_websockets(self) -> None:
        for websocket in self.open_websockets:
            await websocket.close()

    async def send_frame(self, frame: str | bytes) -> None:
        websocket = self.open_websockets[-1]
        if isinstance(frame, bytes):
            await websocket.send_bytes(frame)
        else:
            await websocket.send_str(frame)

    async def send_event(self, event: dict[str, Any]) -> None:
        await self.send_frame(json.dumps(event))

    async def close(self) -> None:
        await self.drop_websockets()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        text = await request.text()
        self.requests.append(
            RecordedRequest(
                method=request.method,
                raw_path=request.rel_url.raw_path,
                query=dict(request.query),
                body=json.loads(text) if text else None,
                authorization=request.headers.get("Authorization"),
            )
        )
        if self.rest_delay:
            self.rest_in_flight += 1
            self.rest_peak_in_flight = max(self.rest_peak_in_flight, self.rest_in_flight)
            try:
                await asyncio.sleep(self.rest_delay)
            finally:
                self.rest_in_flight -= 1
        if self.reset_rest_connections:
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=204)

        status, body = self.replies.get((request.method, request.rel_url.raw_path), (204, None))
        if body is None:
            return web.Response(status=status)
        if isinstance(body, str):
            return web.Response(status=status, text=body)
        return web.json_response(body, status=status)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        self.event_connections.append(request)
        if self.reject_events_with is not None:
            return web.json_response(
                {"message": "Authentication required"}, status=self.reject_events_with
            )
        if self.events_delay:
            await asyncio.sleep(self.events_delay)
        websocket = web.WebSocketResponse(autoping=self.autoping)
        await websocket.prepare(request)
        self._websockets.append(websocket)
        async for _message in websocket:
            pass
        return websocket


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `condition` every few milliseconds; fail the test if it stays false for `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"condition still false after {timeout} s")
        await asyncio.sleep(0.005)


async def cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass

