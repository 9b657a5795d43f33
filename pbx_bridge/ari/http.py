"""A small HTTP/1.1 client for ARI's REST requests: keep-alive connections to one server.

The call flow makes nine REST requests per call, so their CPU cost is most of a call's. One
request through aiohttp's ClientSession cost about 140 us of CPU on uvloop, and about 50 us here
(bench/ari_client.py). Per request, aiohttp builds a request object, header multidicts, a cookie
jar pass, a timer and a response object, which a JSON API on a known server does not need.

It reads the responses Asterisk's HTTP server sends: a status line, headers, and a body sized by
Content-Length, by chunked encoding or by the end of the connection. It follows no redirects
and keeps no cookies; there is no proxy and no compression. The websocket stays on aiohttp.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import NamedTuple

# Limits on what a response may hold, so that a broken server cannot fill the memory.
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024


class HttpError(Exception):
    """No usable response: the connection failed or closed early, or the response is malformed.

    The text names the cause and never a header or body of the request.
    """


class Response(NamedTuple):
    status: int
    reason: str
    body: bytes


class HttpPool:
    """Keep-alive HTTP/1.1 connections to one server, at most `limit` at a time.

    `authority` is the Host header's value, the URL's host and port as written. `headers` are
    sent with every request, such as Authorization. A request and its response hold one
    connection, and finished connections wait for the next request up to `keepalive` seconds.
    `timeout` bounds each request, connecting included.
    """

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        authority: str,
        headers: dict[str, str],
        *,
        limit: int,
        keepalive: float,
        timeout: float,
    ) -> None:
        self.host = host
        self.port = port
        self._ssl = ssl.create_default_context() if scheme == "https" else None
        self._headers = "".join(f"{name}: {value}\r\n" for name, value in {"Host": authority, **headers}.items())
        self._slots = asyncio.Semaphore(limit)
        self._keepalive = keepalive
        self._timeout = timeout
        # Idle connections, the most recently used on the right.
        self._idle: collections.deque[_Connection] = collections.deque()
        self._open: set[_Connection] = set()
        self._closed = False

    async def request(self, method: str, target: str, body: bytes | None = None) -> Response:
        """Send `method target` (target: path and query, already percent-encoded) and return the response.

        `body` is sent as application/json. Raises HttpError, or TimeoutError after `timeout`.
        """
        head = f"{method} {target} HTTP/1.1\r\n{self._headers}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            message = head.encode("latin-1") + body
        else:
            # A POST or PUT without a body sends Content-Length: 0, as HTTP clients usually do.
            head += "\r\n" if method in ("GET", "DELETE") else "Content-Length: 0\r\n\r\n"
            message = head.encode("latin-1")

        # The timeout is a timer on the response's future, because asyncio.timeout cost about a
        # tenth of a request's CPU (bench/ari_client.py). The rare waits, for a free connection
        # slot or a new connection, use asyncio.timeout_at with the same deadline.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        if self._slots.locked():
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        else:
            await self._slots.acquire()
        try:
            connection = self._take_idle(loop)
            if connection is not None:
                try:
                    return await self._exchange(connection, message, deadline)
                except _ClosedBeforeResponse:
                    # The server closed this idle connection as the request went out, before it
                    # read it (Asterisk closes idle ones after http.conf's session_keep_alive).
                    # The request had no effect, so it is sent once more on a new connection.
                    pass
            async with asyncio.timeout_at(deadline):
                connection = await self._connect(loop)
            try:
                return await self._exchange(connection, message, deadline)
            except _ClosedBeforeResponse:
                raise HttpError("server closed the connection") from None
        finally:
            self._slots.release()

    async def close(self) -> None:
        """Close every connection. Requests in progress and later requests fail with HttpError."""
        self._closed = True
        for connection in list(self._open):
            connection.abort()
        self._idle.clear()

    def _take_idle(self, loop: asyncio.AbstractEventLoop) -> _Connection | None:
        deadline = loop.time() - self._keepalive
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable and connection.idle_since > deadline:
                return connection
            connection.abort()
        return None

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        # Also stops the retry of a request whose reused connection close() just closed.
        if self._closed:
            raise HttpError("connection pool is closed")
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self._open, loop), self.host, self.port, ssl=self._ssl
            )
        except OSError as error:
            if isinstance(error, ConnectionRefusedError):
                cause = "connection refused"
            else:
                cause = error.strerror or str(error) or type(error).__name__
            raise HttpError(f"cannot connect to {self.host}:{self.port}: {cause}") from error
        return connection

    async def _exchange(self, connection: _Connection, message: bytes, deadline: float) -> Response:
        # The connection goes back to the pool only after a complete response that lets it stay
        # open. A timeout or cancellation mid-response leaves it in an unknown state: closed.
        response = None
        try:
            response = await connection.send(message, deadline)
        finally:
            if response is not None and connection.reusable:
                connection.idle_since = connection.loop.time()
                self._idle.append(connection)
            else:
                connection.abort()
        return response


class _ClosedBeforeResponse(HttpError):
    """The connection closed before the first byte of the response."""


class _Connection(asyncio.Protocol):
    """One connection: one request at a time, its response parsed as it arrives."""

    def __init__(self, registry: set[_Connection], loop: asyncio.AbstractEventLoop) -> None:
        self._registry = registry
        self.loop = loop
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Response] | None = None
        self._received_any = False
        self.reusable = True
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._registry.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self._registry.discard(self)
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            response = _parse(self._buffer, at_eof=True) if self._received_any else None
        except HttpError as error:
            waiter.set_exception(error)
            return
        if response is not None:
            waiter.set_result(response[0])
        elif self._received_any:
            waiter.set_exception(HttpError("server closed the connection mid-response"))
        else:
            waiter.set_exception(_ClosedBeforeResponse("server closed the connection"))

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            # Bytes that no request is waiting for: the connection is out of step with the server.
            self.abort()
            return
        self._received_any = True
        self._buffer += data
        try:
            parsed = _parse(self._buffer, at_eof=False)
        except HttpError as error:
            waiter.set_exception(error)
            return
        if parsed is not None:
            response, keep_alive = parsed
            self.reusable = keep_alive and len(self._buffer) == 0
            waiter.set_result(response)

    def eof_received(self) -> bool:
        # Returning False closes the transport, and connection_lost completes a response that
        # was sized by the end of the connection.
        return False

    async def send(self, message: bytes, deadline: float) -> Response:
        """Send a request and return its response; raise TimeoutError if none by `deadline`."""
        assert self._transport is not None
        self._waiter = self.loop.create_future()
        self._received_any = False
        timer = self.loop.call_at(deadline, self._time_out)
        self._transport.write(message)
        try:
            return await self._waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _time_out(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(TimeoutError())

    def abort(self) -> None:
        self.reusable = False
        if self._transport is not None:
            self._transport.abort()


def _parse(buffer: bytearray, *, at_eof: bool) -> tuple[Response, bool] | None:
    """Take one complete response off the front of `buffer`, with whether the connection may stay.

    Returns None while the response is incomplete. Responses of ARI are small, so an incomplete
    one is parsed again from the start when more bytes arrive.
    """
    # A loop rather than recursion, so that any number of interim responses fits on the stack.
    while True:
        head_end = buffer.find(b"\r\n\r\n")
        # Until the empty line that ends the head arrives, the buffer contains only head bytes.
        if (len(buffer) if head_end < 0 else head_end + 4) > MAX_HEAD_BYTES:
            raise HttpError("response header too long")
        if head_end < 0:
            if at_eof:
                raise HttpError("server closed the connection mid-response")
            return None

        version, status, reason, headers = _parse_head(bytes(buffer[:head_end]))
        if not 100 <= status < 200:
            break
        # An interim response (we never send Expect, but a server may send 100 anyway).
        del buffer[: head_end + 4]

    keep_alive = _keeps_alive(version, headers.get("connection", ""))
    body_start = head_end + 4

    if status in (204, 304):
        body, end = b"", body_start
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        chunked = _parse_chunked(buffer, body_start)
        if chunked is None:
            # Counts chunk size lines and trailers too, which _parse_chunked does not bound.
            if len(buffer) - body_start > MAX_BODY_BYTES:
                raise HttpError("response body too long")
            if at_eof:
                raise HttpError("server closed the connection mid-response")
            return None
        body, end = chunked
    elif "content-length" in headers:
        length_text = headers["content-length"]
        # Digits only, because int() would also take a sign and "_".
        if not (length_text.isascii() and length_text.isdigit()):
            raise HttpError("malformed Content-Length in response")
        length = int(length_text)
        if not 0 <= length <= MAX_BODY_BYTES:
            raise HttpError("Content-Length out of range in response")
        end = body_start + length
        if len(buffer) < end:
            if at_eof:
                raise HttpError("server closed the connection mid-response")
            return None
        body = bytes(buffer[body_start:end])
    else:
        # No length: the body runs to the end of the connection.
        if len(buffer) - body_start > MAX_BODY_BYTES:
            raise HttpError("response body too long")
        if not at_eof:
            return None
        body, end, keep_alive = bytes(buffer[body_start:]), len(buffer), False

    del buffer[:end]
    return Response(status, reason, body), keep_alive


def _keeps_alive(version: str, connection: str) -> bool:
    """Return whether the server keeps the connection open after this response.

    HTTP/1.1 keeps it unless Connection lists "close". HTTP/1.0 closes it unless Connection
    lists "keep-alive".
    """
    options = {option.strip().lower() for option in connection.split(",")}
    if version == "HTTP/1.0":
        return "keep-alive" in options
    return "close" not in options


def _parse_head(head: bytes) -> tuple[str, int, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise HttpError(f"malformed status line in response: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return version, int(code), reason.strip(), headers


def _parse_chunked(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    """Return the body and the offset after it, or None while chunks are missing."""
    chunks = []
    size_total = 0
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        size_text = bytes(buffer[position:line_end]).split(b";", 1)[0].strip()
        # int() would also take a sign, and a negative size would move `position` backwards.
        if not size_text.isalnum():
            raise HttpError("malformed chunk size in response")
        try:
            size = int(size_text, 16)
        except ValueError:
            raise HttpError("malformed chunk size in response") from None
        size_total += size
        if size_total > MAX_BODY_BYTES:
            raise HttpError("response body too long")
        position = line_end + 2
        if size == 0:
            # Trailer fields, if any, end with an empty line.
            trailer_end = buffer.find(b"\r\n\r\n", position - 2)
            if trailer_end < 0:
                return None
            return b"".join(chunks), trailer_end + 4
        if len(buffer) < position + size + 2:
            return None
        chunks.append(bytes(buffer[position : position + size]))
        position += size + 2
