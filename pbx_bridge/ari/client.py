"""AriClient: REST requests to Asterisk ARI and the application's event websocket."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import yarl

from pbx_bridge.ari.backoff import reconnect_delays
from pbx_bridge.ari.errors import (
    AriUnavailable,
    ServerError,
    describe_transport_error,
    error_for_status,
    map_transport_errors,
)
from pbx_bridge.ari.events import MalformedEvent, decode_event, describe_frame, parse_json
from pbx_bridge.ari.http import HttpError, HttpPool
from pbx_bridge.config import AriConfig

log = logging.getLogger("pbx_bridge.ari")

EventHandler = Callable[[dict[str, Any]], Awaitable[None]]
ConnectHandler = Callable[[], Awaitable[None]]

USER_AGENT = "pbx-bridge"
# Asterisk's HTTP server accepts 100 sessions by default (http.conf `sessionlimit`, per Asterisk's
# http.conf.sample), shared with other HTTP users of that Asterisk. 64 pooled connections leave
# room for them. Hundreds of calls in flight can share the pool because each REST request uses a
# connection for milliseconds.
CONNECTION_LIMIT = 64
# Asterisk closes an idle HTTP connection after 15 s by default (http.conf `session_keep_alive`).
# Closing ours earlier keeps requests off connections that Asterisk is about to close.
KEEPALIVE_TIMEOUT = 10.0
# Seconds between websocket pings. No pong within half of it counts as a dropped connection, so a
# silently dead TCP connection is noticed in seconds rather than minutes.
HEARTBEAT = 20.0
# A websocket that stayed open this many seconds resets the backoff to the minimum delay.
STABLE_CONNECTION = 10.0
# Characters of Asterisk's error text kept in an exception. Its longest texts are about 130
# characters (an estimate from its resource handlers), such as 409 on a recording name in use.
MESSAGE_LIMIT = 300


class AriClient:
    """One ARI application's REST requests (over HttpPool) and event websocket (over aiohttp).

    REST methods return the parsed JSON response, or None for 204 No Content, and raise AriError
    subclasses. `run` keeps the websocket attached until cancelled.
    """

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        app: str,
        *,
        reconnect_min_delay: float = 0.5,
        reconnect_max_delay: float = 30.0,
        request_timeout: float = 10.0,
        heartbeat: float = HEARTBEAT,
        stable_connection: float = STABLE_CONNECTION,
    ) -> None:
        server = yarl.URL(url.rstrip("/"))
        if server.user is not None or server.password is not None:
            raise ValueError("ARI url must not contain credentials; set ari.username and ari.password")
        if server.scheme not in ("http", "https") or not server.host:
            raise ValueError(f"ARI url must be http://HOST:PORT or https://HOST:PORT, got {url!r}")
        if server.path.endswith("/ari"):
            server = server.with_path(server.path[: -len("/ari")])

        self.app = app
        self.username = username
        self._password = password
        self._rest_path = server.raw_path.rstrip("/") + "/ari"
        self._events_url = server.with_scheme("wss" if server.scheme == "https" else "ws").with_path(
            server.path.rstrip("/") + "/ari/events"
        )
        self._display_url = str(server)
        credentials = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._headers = {"Authorization": f"Basic {credentials}"}
        # Checked above: an http or https URL with a host, for which yarl fills in the port.
        assert server.host is not None
        assert server.port is not None
        self._http = HttpPool(
            server.scheme,
            server.host,
            server.port,
            server.raw_authority,
            {**self._headers, "Accept": "application/json", "User-Agent": USER_AGENT},
            limit=CONNECTION_LIMIT,
            keepalive=KEEPALIVE_TIMEOUT,
            timeout=request_timeout,
        )
        self.reconnect_min_delay = reconnect_min_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.request_timeout = request_timeout
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._heartbeat = heartbeat
        self._stable_connection = stable_connection
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._connected = False
        # Validate the delays now rather than at the first disconnect.
        next(reconnect_delays(reconnect_min_delay, reconnect_max_delay))

    @classmethod
    def from_config(cls, config: AriConfig) -> AriClient:
        return cls(
            config.url,
            config.username,
            config.password,
            config.app,
            reconnect_min_delay=config.reconnect_min_delay,
            reconnect_max_delay=config.reconnect_max_delay,
            request_timeout=config.request_timeout,
        )

    def __repr__(self) -> str:
        return f"AriClient({self._display_url!r}, user {self.username!r}, app {self.app!r})"

    @property
    def events_url(self) -> str:
        """The websocket URL of the application's events, without the query."""
        return str(self._events_url)

    @property
    def connected(self) -> bool:
        """Whether the event websocket is open now."""
        return self._connected

    async def close(self) -> None:
        """Close the HTTP session and the websocket; a running `run` then returns.

        Requests made after close raise AriUnavailable.
        """
        self._closed = True
        await self._http.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- REST: applications and channels -------------------------------------------------------

    async def get_application(self) -> Any:
        return await self._request(
            "GET", "/applications/{applicationName}", self.app, applicationName=self.app
        )

    async def set_event_filter(
        self, allowed: Sequence[str] = (), disallowed: Sequence[str] = ()
    ) -> Any:
        """Limit the event types Asterisk sends this application (Asterisk 13.26 and 16.3 on).

        Empty lists mean no limit; both lists are replaced.
        """
        body = {
            "allowed": [{"type": name} for name in allowed],
            "disallowed": [{"type": name} for name in disallowed],
        }
        return await self._request(
            "PUT", "/applications/{applicationName}/eventFilter", self.app,
            applicationName=self.app, body=body,
        )

    async def list_channels(self) -> Any:
        return await self._request("GET", "/channels", None)

    async def get_channel(self, channel_id: str) -> Any:
        return await self._request("GET", "/channels/{channelId}", channel_id, channelId=channel_id)

    async def ring(self, channel_id: str) -> Any:
        return await self._request(
            "POST", "/channels/{channelId}/ring", channel_id, channelId=channel_id
        )

    async def answer(self, channel_id: str) -> Any:
        return await self._request(
            "POST", "/channels/{channelId}/answer", channel_id, channelId=channel_id
        )

    async def hangup(self, channel_id: str, reason: str = "normal") -> Any:
        return await self._request(
            "DELETE", "/channels/{channelId}", channel_id, channelId=channel_id, query={"reason": reason}
        )

    async def continue_in_dialplan(
        self,
        channel_id: str,
        context: str | None = None,
        extension: str | None = None,
        priority: int | None = None,
        label: str | None = None,
    ) -> Any:
        query = {"context": context, "extension": extension, "priority": priority, "label": label}
        return await self._request(
            "POST", "/channels/{channelId}/continue", channel_id, channelId=channel_id, query=query
        )

    async def get_variable(self, channel_id: str, variable: str) -> Any:
        """Return `{"value": ...}` for a channel variable or dialplan function such as CALLERID(num)."""
        return await self._request(
            "GET",
            "/channels/{channelId}/variable",
            channel_id,
            channelId=channel_id,
            query={"variable": variable},
        )

    async def set_variable(self, channel_id: str, variable: str, value: str | None = None) -> Any:
        """Set a channel variable; with value None the request carries no value, as ARI allows."""
        return await self._request(
            "POST",
            "/channels/{channelId}/variable",
            channel_id,
            channelId=channel_id,
            query={"variable": variable, "value": value},
        )

    async def create_channel(
        self,
        endpoint: str,
        channel_id: str | None = None,
        app_args: str | None = None,
        other_channel_id: str | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> Any:
        """Create a channel in this application without dialing it (POST /channels/create)."""
        query = {
            "endpoint": endpoint,
            "app": self.app,
            "appArgs": app_args,
            "channelId": channel_id,
            "otherChannelId": other_channel_id,
        }
        return await self._request(
            "POST", "/channels/create", channel_id, query=query, body=_variables_body(variables)
        )

    async def dial(self, channel_id: str, caller: str | None = None, timeout: int | None = None) -> Any:
        return await self._request(
            "POST",
            "/channels/{channelId}/dial",
            channel_id,
            channelId=channel_id,
            query={"caller": caller, "timeout": timeout},
        )

    async def originate(
        self,
        endpoint: str,
        extension: str | None = None,
        context: str | None = None,
        priority: int | None = None,
        caller_id: str | None = None,
        channel_id: str | None = None,
        other_channel_id: str | None = None,
        timeout: int | None = None,
        variables: Mapping[str, Any] | None = None,
        app: str | None = None,
        app_args: str | None = None,
    ) -> Any:
        """Create and dial a channel into the dialplan or into `app` (POST /channels)."""
        query = {
            "endpoint": endpoint,
            "extension": extension,
            "context": context,
            "priority": priority,
            "callerId": caller_id,
            "channelId": channel_id,
            "otherChannelId": other_channel_id,
            "timeout": timeout,
            "app": app,
            "appArgs": app_args,
        }
        return await self._request(
            "POST", "/channels", channel_id, query=query, body=_variables_body(variables)
        )

    # -- REST: bridges and recordings ----------------------------------------------------------

    async def create_bridge(self, bridge_id: str, name: str | None = None, type: str = "mixing") -> Any:
        query = {"type": type, "bridgeId": bridge_id, "name": name}
        return await self._request("POST", "/bridges", bridge_id, query=query)

    async def add_channel(self, bridge_id: str, *channel_ids: str) -> Any:
        """Add one or more channels to a bridge in one request.

        Asterisk looks up every channel before it adds any, so one channel that is gone fails the
        whole request (400 "Channel not found", raised as NotFound) and none is added.
        """
        # Errors name the channels: they are the ids a caller acts on when addChannel fails.
        channels = ",".join(channel_ids)
        return await self._request(
            "POST",
            "/bridges/{bridgeId}/addChannel",
            channels,
            bridgeId=bridge_id,
            query={"channel": channels},
        )

    async def destroy_bridge(self, bridge_id: str) -> Any:
        return await self._request("DELETE", "/bridges/{bridgeId}", bridge_id, bridgeId=bridge_id)

    async def record_bridge(
        self,
        bridge_id: str,
        name: str,
        format: str = "wav",
        if_exists: str = "fail",
        max_duration: int | None = None,
        beep: bool = False,
    ) -> Any:
        """Start recording a bridge into `name` (relative to Asterisk's recording folder)."""
        query = {
            "name": name,
            "format": format,
            "ifExists": if_exists,
            "maxDurationSeconds": max_duration,
            "beep": beep,
        }
        return await self._request(
            "POST", "/bridges/{bridgeId}/record", bridge_id, bridgeId=bridge_id, query=query
        )

    async def stop_recording(self, name: str) -> Any:
        return await self._request(
            "POST", "/recordings/live/{recordingName}/stop", name, recordingName=name
        )

    async def get_stored_recording(self, name: str) -> Any:
        return await self._request(
            "GET", "/recordings/stored/{recordingName}", name, recordingName=name
        )

    # -- REST plumbing -------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        resource_id: str | None,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        **path_params: str,
    ) -> Any:
        """Send one request to `path`, the specification's template filled from path_params."""
        operation = f"{method} {path}"
        # Ids go into the path percent-encoded, "/" included, because recording names may
        # contain folders ("calltracking/2026/12/04/..."). The query is encoded here too, so
        # that the URL is built once per request and aiohttp need not parse and re-encode it.
        encoded_path = path.format(**{key: quote(value, safe="") for key, value in path_params.items()})
        query_string = _query_string(query)
        target = self._rest_path + encoded_path + ("?" + query_string if query_string else "")
        log.debug("ARI %s %s%s%s", method, encoded_path, "?" if query_string else "", query_string)

        if self._closed:
            raise AriUnavailable(operation, resource_id, None, "client is closed")
        try:
            status, reason, content = await self._http.request(
                method, target, None if body is None else orjson.dumps(body)
            )
        except (TimeoutError, HttpError):
            # Entered only on failure, because entering the context manager costs about 1 us,
            # which every successful request would pay.
            with map_transport_errors(operation, resource_id):
                raise

        if 200 <= status < 300:
            if status == 204 or not content.strip():
                return None
            try:
                return parse_json(content)
            except ValueError:
                raise ServerError(
                    operation, resource_id, status, f"response is not JSON: {describe_frame(content)}"
                ) from None
        raise error_for_status(
            status, _asterisk_message(content, reason), operation=operation, resource_id=resource_id
        )

    def _get_session(self) -> aiohttp.ClientSession:
        # The websocket's session, created on first use so that it belongs to the running loop.
        if self._session is None or self._session.closed:
            # The session timeout also bounds the websocket handshake.
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session

    # -- websocket -----------------------------------------------------------------------------

    async def run(self, on_event: EventHandler, on_connect: ConnectHandler | None = None) -> None:
        """Keep the application's event websocket attached until cancelled or `close`d.

        After every successful (re)connect `on_connect` is awaited before any event of that
        connection; then `on_event` is awaited for each event in arrival order. A failed
        connect or a dropped connection is retried after a capped exponential backoff.
        Exceptions raised by either callback are logged and do not stop the loop.
        """
        delays = reconnect_delays(self.reconnect_min_delay, self.reconnect_max_delay)
        attempt = 0
        unauthorized_logged = False
        loop = asyncio.get_running_loop()
        while not self._closed:
            attempt += 1
            opened_at: float | None = None
            try:
                opened_at, reason = await self._listen(on_event, on_connect)
            except aiohttp.WSServerHandshakeError as error:
                reason = describe_transport_error(error)
                if error.status == 401 and not unauthorized_logged:
                    log.error(
                        "ARI at %s rejected user %r (401 Unauthorized); check ari.username and "
                        "ari.password against Asterisk's ari.conf",
                        self._display_url,
                        self.username,
                    )
                    unauthorized_logged = True
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as error:
                reason = describe_transport_error(error)
            except Exception as error:
                # A bug here must not end the worker silently: log it and keep reconnecting.
                log.exception("ARI websocket loop for app %s failed", self.app)
                reason = f"unexpected {type(error).__name__}"
            finally:
                self._connected = False

            if self._closed:
                break
            if opened_at is not None:
                unauthorized_logged = False
                if loop.time() - opened_at >= self._stable_connection:
                    delays = reconnect_delays(self.reconnect_min_delay, self.reconnect_max_delay)
                    attempt = 1
            delay = next(delays)
            log.warning(
                "ARI websocket %s for app %s: %s; reconnecting in %.2f s (attempt %d)",
                self._display_url,
                self.app,
                self._redact(reason),
                delay,
                attempt,
            )
            await asyncio.sleep(delay)
        log.info("ARI websocket for app %s stopped: client closed", self.app)

    async def _listen(
        self, on_event: EventHandler, on_connect: ConnectHandler | None
    ) -> tuple[float, str]:
        """Connect, run on_connect and deliver events until the socket closes.

        Returns the loop time the socket opened at and why it closed.
        """
        url = self._events_url.with_query({"app": self.app, "subscribeAll": "false"})
        session = self._get_session()
        async with session.ws_connect(
            url, heartbeat=self._heartbeat, timeout=aiohttp.ClientWSTimeout(ws_close=5.0)
        ) as websocket:
            opened_at = asyncio.get_running_loop().time()
            self._connected = True
            log.info("ARI connected to %s app %s", self._display_url, self.app)
            if on_connect is not None:
                await self._call_on_connect(on_connect)

            # The iteration ends on a close frame or a lost connection, and an ERROR message ends
            # it here. websocket.exception() then gives the cause, such as a missed heartbeat pong.
            async for message in websocket:
                if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    await self._deliver(message.data, on_event)
                elif message.type == aiohttp.WSMsgType.ERROR:
                    break

            error = websocket.exception()
            if error is not None:
                return opened_at, describe_transport_error(error)
            if websocket.close_code is None:
                return opened_at, "connection lost"
            return opened_at, f"connection closed by Asterisk (code {websocket.close_code})"

    async def _call_on_connect(self, on_connect: ConnectHandler) -> None:
        try:
            await on_connect()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Events still flow: a new call must not fail because reconciling old ones did.
            log.exception("ARI on_connect handler failed for app %s", self.app)

    async def _deliver(self, frame: str | bytes, on_event: EventHandler) -> None:
        try:
            event = decode_event(frame)
        except MalformedEvent as error:
            log.warning("ARI skipped a malformed event (%s): %s", error, describe_frame(frame))
            return

        event_type = event.get("type", "<no type>")
        log.debug("ARI event %s", event_type)
        try:
            await on_event(event)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("ARI event handler failed on %s event", event_type)

    def _redact(self, text: str) -> str:
        """Hide the password in a text taken from a third-party exception."""
        return text.replace(self._password, "********") if self._password else text


def _query_string(query: Mapping[str, Any] | None) -> str:
    """Encode the set parameters as ARI expects them ("true"/"false" for booleans).

    Values are percent-encoded with nothing left safe, as urlencode(quote_via=quote) does. Keys
    are ARI parameter names, which need no encoding.
    """
    if not query:
        return ""
    pairs = []
    for key, value in query.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        pairs.append(f"{key}={quote(str(value), safe='')}")
    return "&".join(pairs)


def _variables_body(variables: Mapping[str, Any] | None) -> dict[str, dict[str, str]] | None:
    # ARI takes channel variables in the JSON body as {"variables": {"NAME": "value"}}. Values
    # are sent as strings because channel variables are strings in Asterisk.
    if not variables:
        return None
    return {"variables": {name: str(value) for name, value in variables.items()}}


def _asterisk_message(content: bytes, reason: str | None) -> str:
    """Extract Asterisk's error text from a `{"message": ...}` body, or fall back to the reason.

    The text is cut to MESSAGE_LIMIT characters, because it goes into log lines and journal rows.
    """
    try:
        body = parse_json(content)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return describe_frame(body["message"], MESSAGE_LIMIT)
    if content.strip():
        return describe_frame(content.strip())
    return describe_frame(reason or "no message", MESSAGE_LIMIT)
