"""The fake Asterisk's HTTP server (ARI REST and events websocket) and its control API for tests."""

from __future__ import annotations

import asyncio
import base64
import binascii
import fnmatch
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .channels import Party, ari_timestamp
from .pbx import ASTERISK_ID, Call, Pbx
from .rest import PARAMS, RestApi, error
from .scripts import LineBehaviour, NoAnswer

logger = logging.getLogger("pbx_bridge.tests.fake_asterisk")


@dataclass(frozen=True)
class RecordedRequest:
    """A REST request and the status the fake returned; `path` has no /ari prefix, as in the transcripts."""

    method: str
    path: str
    params: dict[str, Any]
    status: int
    # Wall-clock time (time.time()) the fake answered, for reaction-time benchmarks.
    at: float = field(default_factory=time.time)

    @property
    def rest(self) -> str:
        return f"{self.method} {self.path}"


class _EventSession:
    """One events websocket and the queue of events waiting to be written to it."""

    def __init__(self, request: web.Request, socket: web.WebSocketResponse, apps: list[str]) -> None:
        self.request = request
        self.socket = socket
        self.apps = apps
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def write_events(self) -> None:
        while True:
            event = await self.queue.get()
            await self.socket.send_str(json.dumps(event))


class FakeAsterisk:
    """An ARI server on 127.0.0.1 that behaves like Asterisk 22 towards one application.

    See the package docstring for the control API.
    """

    def __init__(
        self,
        app: str = "calltracking",
        username: str = "pbx-bridge",
        password: str = "secret",
        *,
        stasis_entry_delay: float = 0.01,
        default_line: LineBehaviour = NoAnswer(),
        inbound_contexts: tuple[str, ...] = ("calltracking-inbound", "from-trunk"),
        session_keep_alive: float = 15.0,
    ) -> None:
        self.app = app
        self.username = username
        self.password = password
        self.pbx = Pbx(self._deliver, self._has_websocket, dialplan_app=app,
                       stasis_entry_delay=stasis_entry_delay, default_line=default_line,
                       inbound_contexts=frozenset(inbound_contexts))
        self.requests: list[RecordedRequest] = []
        self.events: list[dict[str, Any]] = []
        # Application name -> (allowed, disallowed) event types set by PUT .../eventFilter.
        self.event_filters: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        self.undelivered_events: list[dict[str, Any]] = []
        self.registered_apps: set[str] = set()
        self.started_at = time.time()
        self._sessions: dict[str, _EventSession] = {}
        self._session_tasks: set[asyncio.Task[None]] = set()
        self._refuse_websockets_until = 0.0
        self._recording_failure: tuple[int, str] | None = None
        self._recording_failures_left: int | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        # Seconds an idle keep-alive connection stays open (http.conf session_keep_alive).
        self._session_keep_alive = session_keep_alive
        self._close_after_response = False
        # Pairs of a "METHOD /path" pattern and its delay in seconds (None: never), from
        # delay_responses.
        self._response_delays: list[tuple[str, float | None]] = []
        self._held_requests: set[asyncio.Task[Any]] = set()
        self.url = ""

    # Server life cycle

    async def start(self) -> None:
        """Serve on a free port of 127.0.0.1; `url` is then `http://127.0.0.1:<port>`."""
        application = web.Application(middlewares=[self._ari_middleware])
        application.add_routes([web.get("/ari/events", self._events_websocket)])
        application.add_routes(RestApi(self).routes())
        self._runner = web.AppRunner(application, handle_signals=False, access_log=None,
                                     keepalive_timeout=self._session_keep_alive)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._site = site
        self.url = f"http://127.0.0.1:{port}"
        self.started_at = time.time()
        logger.info("fake Asterisk listening on %s", self.url)

    async def stop(self) -> None:
        for channel in list(self.pbx.channels.values()):
            channel.cancel_timers()
        for session in list(self._sessions.values()):
            await session.socket.close()
        for task in list(self._held_requests):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        logger.info("fake Asterisk stopped")

    # Control API: lines and calls

    def script_endpoint(self, endpoint: str, behaviour: LineBehaviour) -> None:
        """Set what the line behind `endpoint` (such as "PJSIP/office") does when dialed."""
        self.pbx.scripts[endpoint] = behaviour

    async def incoming_call(self, dialed: str, caller_number: str = "", caller_name: str = "", *,
                            endpoint: str = "PJSIP/trunk", context: str = "calltracking-inbound",
                            stasis_args: list[str] | None = None, channel_id: str | None = None) -> Call:
        """Place an inbound call that runs `Stasis(<app>,<dialed>)` in `context`.

        `channel_id` sets the caller's channel id, which is otherwise a new unique id.
        Without an attached websocket Stasis() fails and `call.fell_back` records the dialplan
        fallback, as the sample dialplan's STASISSTATUS=FAILED branch takes it.
        """
        return self.pbx.place_inbound_call(self.app, dialed, caller=Party(caller_name, caller_number),
                                           endpoint=endpoint, context=context,
                                           stasis_args=stasis_args, channel_id=channel_id)

    async def caller_hangs_up(self, channel_id: str, cause: int | None = 16,
                              tech_cause: int | None = None, *, after: float = 0.0) -> None:
        """Hang up a channel from its far end after `after` seconds.

        Works for any channel, the company line's leg included. `cause=None` sends
        ChannelHangupRequest without a cause, as a PJSIP caller's BYE does.
        """
        if after > 0:
            await asyncio.sleep(after)
        channel = self.pbx.channels.get(channel_id)
        if channel is None:
            raise LookupError(f"channel {channel_id} does not exist: it was already hung up")
        self.pbx.far_end_hangup(channel, cause, tech_cause)

    callee_hangs_up = caller_hangs_up

    def fail_recordings(self, status: int | None = 500, message: str = "Internal Server Error",
                        times: int | None = None) -> None:
        """Make the next bridge recordings fail with `status` and `message`.

        The default is Asterisk's response when the recording folder cannot be created. `times`
        limits how many recordings fail (None: all until `fail_recordings(None)`).
        """
        self._recording_failure = None if status is None else (status, message)
        self._recording_failures_left = times

    def take_recording_failure(self) -> tuple[int, str] | None:
        if self._recording_failure is None:
            return None
        failure = self._recording_failure
        if self._recording_failures_left is not None:
            self._recording_failures_left -= 1
            if self._recording_failures_left <= 0:
                self._recording_failure = None
        return failure

    def close_connections_after_responses(self, enabled: bool = True) -> None:
        """Send `Connection: close` with every REST response and close the connection after it.

        An HTTP server that ends the session after a response sends this header with it.
        """
        self._close_after_response = enabled

    def delay_responses(self, pattern: str, seconds: float | None) -> None:
        """Hold REST requests that match `pattern` for `seconds` before handling them.

        `pattern` is a shell-style pattern of "METHOD /path" without /ari, such as
        "POST /channels/*/answer". `seconds=None` never handles the request, as an Asterisk
        whose HTTP thread is stuck on a locked channel; the connection stays open.
        """
        self._response_delays.append((pattern, seconds))

    def stop_delaying_responses(self, pattern: str) -> None:
        """Handle requests that match `pattern` at once again; requests held already stay held."""
        self._response_delays = [delay for delay in self._response_delays if delay[0] != pattern]

    async def drop_websockets(self, refuse_for: float = 0.0) -> None:
        """Cut every events websocket without a close frame, as a network failure does.

        Channels stay in Stasis and nothing is replayed later. For `refuse_for` seconds new
        websocket requests get 503.
        """
        self._refuse_websockets_until = time.monotonic() + refuse_for
        for session in list(self._sessions.values()):
            transport = session.request.transport
            if transport is not None:
                transport.abort()
        await self.wait_for(lambda: not self._sessions, timeout=5)

    async def restart_http(self, down_for: float) -> None:
        """Reset every HTTP connection, REST and websocket, and reject new connections for
        `down_for` seconds, then listen on the same port again.

        Channels stay in Stasis and no event is replayed. This is the HTTP side of a restart,
        without the hangups that restarting all of Asterisk also causes.
        """
        assert self._runner is not None
        assert self._runner.server is not None
        assert self._site is not None
        port = int(self.url.rsplit(":", 1)[1])
        await self._site.stop()
        for handler in list(self._runner.server.connections):
            if handler.transport is not None:
                handler.transport.abort()
        await self.wait_for(lambda: not self._sessions, timeout=5)
        await asyncio.sleep(down_for)
        self._site = web.TCPSite(self._runner, "127.0.0.1", port)
        await self._site.start()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until `predicate()` is true; raise TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition still false after {timeout} s")
            await asyncio.sleep(0.005)

    async def wait_call_ended(self, call: Call, timeout: float = 5.0) -> None:
        await self.wait_for(lambda: call.ended, timeout)

    # Control API: what happened

    @property
    def calls(self) -> list[Call]:
        return self.pbx.calls

    @property
    def fallbacks(self) -> list[dict[str, Any]]:
        return self.pbx.fallbacks

    @property
    def websocket_count(self) -> int:
        return len({id(session) for session in self._sessions.values()})

    def channel_exists(self, channel_id: str) -> bool:
        return channel_id in self.pbx.channels

    def live_channels(self) -> list[str]:
        """Return the ids of channels that still exist, in Stasis or not."""
        return list(self.pbx.channels)

    def channel(self, channel_id: str) -> dict[str, Any]:
        """Return the channel's ARI JSON; raise KeyError if it does not exist."""
        return self.pbx.channels[channel_id].to_json()

    def is_bridged(self, channel_id: str) -> bool:
        """Tell whether the channel shares a bridge with at least one other channel."""
        channel = self.pbx.channels.get(channel_id)
        if channel is None or channel.bridge_id is None:
            return False
        return len(self.pbx.bridges[channel.bridge_id].channel_ids) > 1

    def is_ringing(self, endpoint: str) -> bool:
        """Tell whether a channel to `endpoint` is ringing."""
        return any(channel.endpoint == endpoint and channel.state == "Ringing"
                   for channel in self.pbx.channels.values())

    def event_types(self, object_id: str | None = None) -> list[str]:
        """Return the types of the delivered events, optionally only those about one channel,
        bridge or recording name."""
        return [event["type"] for event in self.events
                if object_id is None or object_id in _event_subjects(event)]

    # Websocket delivery

    def _has_websocket(self, app: str) -> bool:
        return app in self._sessions

    def _deliver(self, app: str, event: dict[str, Any]) -> None:
        allowed, disallowed = self.event_filters.get(app, (frozenset(), frozenset()))
        if event["type"] in disallowed or (allowed and event["type"] not in allowed):
            return
        session = self._sessions.get(app)
        if session is None:
            self.undelivered_events.append(event)
            return
        self.events.append(event)
        session.queue.put_nowait(event)

    async def _events_websocket(self, request: web.Request) -> web.StreamResponse:
        apps = [app for app in str(request[PARAMS].get("app") or "").split(",") if app]
        if not apps:
            return error(400, "Missing param 'app'")
        if time.monotonic() < self._refuse_websockets_until:
            return error(503, "Service Unavailable")
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        session = _EventSession(request, socket, apps)
        self._attach(session, subscribe_all=str(request[PARAMS].get("subscribeAll")) == "true")
        writer = asyncio.create_task(session.write_events())
        try:
            async for _message in socket:
                pass  # Asterisk ignores what clients send on the events websocket.
        finally:
            writer.cancel()
            self._detach(session)
        return socket

    def _attach(self, session: _EventSession, *, subscribe_all: bool) -> None:
        for app in session.apps:
            previous = self._sessions.get(app)
            if previous is not None:
                # A second websocket for an application takes it over, as in Asterisk.
                previous.queue.put_nowait({"type": "ApplicationReplaced", "application": app,
                                           "timestamp": ari_timestamp(), "asterisk_id": ASTERISK_ID})
            self._sessions[app] = session
            self.registered_apps.add(app)
            if subscribe_all:
                self.pbx.subscribe_all_apps.add(app)
        logger.info("events websocket attached for %s", ",".join(session.apps))

    def _detach(self, session: _EventSession) -> None:
        for app in session.apps:
            if self._sessions.get(app) is session:
                del self._sessions[app]
                self.pbx.subscribe_all_apps.discard(app)
        logger.info("events websocket detached for %s", ",".join(session.apps))

    # HTTP plumbing

    def _authorized(self, request: web.Request) -> bool:
        api_key = request.query.get("api_key")
        if api_key is not None:
            return api_key == f"{self.username}:{self.password}"
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        return decoded == f"{self.username}:{self.password}"

    @web.middleware
    async def _ari_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/ari/"):
            return web.Response(status=404, text="Not Found")
        if not self._authorized(request):
            response = error(401, "Authentication required")
            response.headers["WWW-Authenticate"] = 'Basic realm="Asterisk REST Interface"'
            return self._record(request, {}, response)

        params: dict[str, Any] = dict(request.query)
        params.pop("api_key", None)
        body = await request.read()
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                return self._record(request, params, error(400, "Error parsing request body"))
            if isinstance(parsed, dict):
                # Asterisk reads every query parameter from a JSON body object as well.
                params.update(parsed)
        request[PARAMS] = params

        if request.path == "/ari/events":
            return await handler(request)

        await self._delay(request)
        with self.pbx.deferring() as pending:
            try:
                response = await handler(request)
            except web.HTTPNotFound:
                response = error(404, "Resource not found")
            except web.HTTPMethodNotAllowed as refused:
                response = error(405, "Invalid method")
                response.headers["Allow"] = ", ".join(sorted(refused.allowed_methods))
        self._record(request, params, response)
        if self._close_after_response:
            response.force_close()
        # The response goes out before the events the request caused, as on a real Asterisk. A
        # client that is gone by then does not undo the request: its events and follow-up actions,
        # such as a created channel's entry into Stasis, still happen.
        try:
            await response.prepare(request)
            await response.write_eof()
        finally:
            for action in pending:
                action()
        return response

    async def _delay(self, request: web.Request) -> None:
        operation = f"{request.method} {request.path[len('/ari'):]}"
        for pattern, seconds in self._response_delays:
            if fnmatch.fnmatchcase(operation, pattern):
                if seconds is None:
                    # Held until the client gives up or stop() cancels it.
                    task = asyncio.current_task()
                    assert task is not None
                    self._held_requests.add(task)
                    try:
                        await asyncio.Event().wait()
                    finally:
                        self._held_requests.discard(task)
                await asyncio.sleep(seconds)
                return

    def _record(self, request: web.Request, params: dict[str, Any],
                response: web.StreamResponse) -> web.StreamResponse:
        self.requests.append(RecordedRequest(request.method, request.path[len("/ari"):],
                                             dict(params), response.status))
        return response


def _event_subjects(event: dict[str, Any]) -> set[str]:
    subjects = set()
    for key in ("channel", "peer", "bridge"):
        if isinstance(event.get(key), dict):
            subjects.add(event[key]["id"])
    if isinstance(event.get("recording"), dict):
        subjects.add(event["recording"]["name"])
    return subjects
