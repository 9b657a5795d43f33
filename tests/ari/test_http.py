"""HttpPool against raw TCP servers on 127.0.0.1 that send exactly the bytes each test scripts.

Every test runs on asyncio's own event loop and on uvloop, which the service uses when installed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from pbx_bridge.ari import http
from pbx_bridge.ari.http import MAX_HEAD_BYTES, HttpError, HttpPool, Response

from .server import wait_until

AUTHORIZATION = "Basic cGJ4LWJyaWRnZTpzZWNyZXQ="


# NOTE: pytest-asyncio 1.x deprecates overriding event_loop_policy. Its replacement, the
# pytest_asyncio_loop_factories hook, has to live in a conftest.py.
@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.EventLoopPolicy()
    return asyncio.DefaultEventLoopPolicy()


def build_response(body: bytes = b"ok", status: str = "200 OK", headers: str = "") -> bytes:
    """Build a response sized by Content-Length; `headers` are extra lines, each ending in CRLF."""
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body


class Peer:
    """The server's side of one accepted connection, handed to the test's handler."""

    def __init__(
        self,
        server: ScriptedServer,
        number: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        # 1 for the first connection the server accepted, 2 for the second, and so on.
        self.number = number
        self.reader = reader
        self.writer = writer
        # Set when the handler has returned, which is also when the server side is closed.
        self.finished = asyncio.Event()

    async def read_request(self) -> bytes | None:
        """Read one request, head and body, and record it; None once the client has closed."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        request = head + await self.reader.readexactly(length)
        self.server.requests.append(request)
        return request

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_bytewise(self, data: bytes) -> None:
        # The pause lets the client read each byte on its own rather than several at once.
        for index in range(len(data)):
            await self.send(data[index : index + 1])
            await asyncio.sleep(0.001)

    async def respond(self, *responses: bytes) -> None:
        """Read a request and send the next of `responses`, until all are sent or the client closes."""
        for response in responses:
            if await self.read_request() is None:
                return
            await self.send(response)

    async def echo(self) -> None:
        """Respond to every request with its target as the body, until the client closes."""
        while (request := await self.read_request()) is not None:
            target = request.split(b" ", 2)[1]
            await self.send(build_response(target))

    async def hold(self) -> None:
        """Keep the connection open, reading and dropping what arrives, until the client closes."""
        try:
            while await self.reader.read(65536):
                pass
        except ConnectionError:
            pass


Handler = Callable[[Peer], Awaitable[None]]


class ScriptedServer:
    """A TCP server on 127.0.0.1 that runs `handler` for each accepted connection, then closes it."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.peers: list[Peer] = []
        self.requests: list[bytes] = []
        self.open = 0
        self.peak_open = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def accepted(self) -> int:
        return len(self.peers)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = Peer(self, len(self.peers) + 1, reader, writer)
        self.peers.append(peer)
        self.open += 1
        self.peak_open = max(self.peak_open, self.open)
        try:
            await self.handler(peer)
        except (ConnectionError, asyncio.IncompleteReadError):
            # The client dropped the connection while the handler wrote or read.
            pass
        except asyncio.CancelledError:
            # close() cancels handlers that still wait. The task ends normally because the
            # done-callback of Python 3.11's start_server fails on a cancelled task and logs it.
            pass
        finally:
            self.open -= 1
            writer.close()
            peer.finished.set()
            self._tasks.discard(task)


Serve = Callable[..., Awaitable[tuple[ScriptedServer, HttpPool]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start a ScriptedServer with a handler, and an HttpPool pointed at it."""
    started: list[tuple[ScriptedServer, HttpPool]] = []

    async def start(
        handler: Handler, *, limit: int = 4, keepalive: float = 10.0, timeout: float = 2.0
    ) -> tuple[ScriptedServer, HttpPool]:
        server = ScriptedServer(handler)
        await server.start()
        pool = HttpPool(
            "http",
            "127.0.0.1",
            server.port,
            f"127.0.0.1:{server.port}",
            {"Authorization": AUTHORIZATION, "Accept": "application/json"},
            limit=limit,
            keepalive=keepalive,
            timeout=timeout,
        )
        started.append((server, pool))
        return server, pool

    yield start

    for server, pool in started:
        await pool.close()
        await server.close()


# -- response bodies ------------------------------------------------------------------------------


async def test_content_length_body(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        await peer.respond(build_response(b'{"message": "Channel not found"}', status="404 Not Found"))
        await peer.hold()

    _, pool = await serve(handler)

    response = await pool.request("GET", "/ari/channels/1")

    assert response == Response(404, "Not Found", b'{"message": "Channel not found"}')


async def test_empty_reason_phrase(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        await peer.respond(b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok")
        await peer.hold()

    _, pool = await serve(handler)

    response = await pool.request("GET", "/ari/channels")

    assert response == Response(200, "", b"ok")


async def test_no_content_has_empty_body(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        await peer.respond(b"HTTP/1.1 204 No Content\r\n\r\n", build_response(b"second"))
        await peer.hold()

    server, pool = await serve(handler)

    first = await pool.request("POST", "/ari/channels/1/answer")
    second = await pool.request("GET", "/ari/channels")

    assert first == Response(204, "No Content", b"")
    assert second.body == b"second"
    assert server.accepted == 1


async def test_response_split_into_single_bytes(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        await peer.send_bytewise(build_response(b'{"id": "1796411651.26"}'))
        await peer.hold()

    _, pool = await serve(handler)

    response = await pool.request("GET", "/ari/channels/1796411651.26")

    assert response == Response(200, "OK", b'{"id": "1796411651.26"}')


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nCONTENT-LENGTH: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-length:2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length:   2  \r\n\r\n",
    ],
)
async def test_header_names_any_case(serve: Serve, head: bytes) -> None:
    async def handler(peer: Peer) -> None:
        await peer.respond(head + b"ok")
        await peer.hold()

    _, pool = await serve(handler)

    response = await pool.request("GET", "/ari/channels")

    assert response.body == b"ok"


# -- chunked transfer encoding and bodies to the end of the connection ----------------------------

CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;name=value\r\nhello\r\n"
    b"A\r\n, 12345678\r\n"
    b"1;a=1;b=\"two\"\r\n!\r\n"
    b"0;last\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n"
)


async def test_chunked_body_with_extensions_and_trailers(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        await peer.respond(CHUNKED)
        await peer.hold()

    _, pool = await serve(handler)

    response = await pool.request("GET", "/ari/recordings/stored")

    assert response == Response(200, "OK", b"hello, 12345678!")


async def test_chunked_body_keeps_connection(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        empty_chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        await peer.respond(CHUNKED, empty_chunked, build_response(b"third"))
        await peer.hold()

    server, pool = await serve(handler)

    first = await pool.request("GET", "/ari/recordings/stored")
    second = await pool.request("GET", "/ari/recordings/stored")
    third = await pool.request("GET", "/ari/channels")

    assert first.body == b"hello, 12345678!"
    assert second.body == b""
    assert third.body == b"third"
    assert server.accepted == 1


async def test_chunked_split_into_single_bytes(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        await peer.send_bytewise(CHUNKED)
        await peer.hold()

    _, pool = await serve(handler)

    response = await pool.request("GET", "/ari/recordings/stored")

    assert response.body == b"hello, 12345678!"


async def test_chunked_header_any_case(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        await peer.respond(b"HTTP/1.1 200 OK\r\ntransfer-encoding: CHUNKED\r\n\r\n2\r\nok\r\n0\r\n\r\n")
        await peer.hold()

    _, pool = await serve(handler)

    response = await pool.request("GET", "/ari/channels")

    assert response.body == b"ok"


async def test_chunked_wins_over_content_length(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        await peer.respond(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nok\r\n0\r\n\r\n"
        )
        await peer.hold()

    _, pool = await serve(handler)

    response = await pool.request("GET", "/ari/channels")

    assert response.body == b"ok"


async def test_body_until_connection_closes(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ")
        await peer.send(b"the end")

    _, pool = await serve(handler)

    response = await pool.request("GET", "/ari/asterisk/info")

    assert response == Response(200, "OK", b"until the end")


# -- keep-alive and Connection: close -------------------------------------------------------------


async def test_keep_alive_reuses_connection(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        await peer.echo()

    server, pool = await serve(handler)

    first = await pool.request("GET", "/first")
    second = await pool.request("GET", "/second")

    assert first.body == b"/first"
    assert second.body == b"/second"
    assert server.accepted == 1


@pytest.mark.parametrize(
    "first_response",
    [
        build_response(b"first", headers="Connection: close\r\n"),
        build_response(b"first", headers="connection: CLOSE\r\n"),
        build_response(b"first", headers="Connection: keep-alive, close\r\n"),
        build_response(b"first").replace(b"HTTP/1.1", b"HTTP/1.0", 1),
    ],
    ids=["close", "close_any_case", "close_in_list", "http_1_0"],
)
async def test_connection_close_opens_new_connection(serve: Serve, first_response: bytes) -> None:
    # The server leaves the connection open, so only the response keeps the client off it.
    async def handler(peer: Peer) -> None:
        if peer.number == 1:
            await peer.respond(first_response, build_response(b"stale"))
            await peer.hold()
        else:
            await peer.echo()

    server, pool = await serve(handler)

    await pool.request("GET", "/first")
    second = await pool.request("GET", "/second")

    assert second.body == b"/second"
    assert server.accepted == 2


async def test_http_1_0_keep_alive_reuses_connection(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        response = build_response(b"first", headers="Connection: Keep-Alive\r\n")
        await peer.respond(response.replace(b"HTTP/1.1", b"HTTP/1.0", 1))
        await peer.echo()

    server, pool = await serve(handler)

    await pool.request("GET", "/first")
    second = await pool.request("GET", "/second")

    assert second.body == b"/second"
    assert server.accepted == 1


@pytest.mark.parametrize("same_write", [True, False], ids=["same_write", "separate_writes"])
async def test_interim_continue_is_skipped(serve: Serve, same_write: bool) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"

    async def handler(peer: Peer) -> None:
        await peer.read_request()
        if same_write:
            await peer.send(interim + build_response(b"final"))
        else:
            await peer.send(interim)
            await asyncio.sleep(0.01)
            await peer.send(build_response(b"final"))
        await peer.hold()

    _, pool = await serve(handler)

    response = await pool.request("POST", "/ari/channels", b"{}")

    assert response == Response(200, "OK", b"final")


async def test_several_interim_responses_are_skipped(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        await peer.respond(
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 102 Processing\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n" + build_response(b"final")
        )
        await peer.hold()

    _, pool = await serve(handler)

    response = await pool.request("GET", "/ari/channels")

    assert response.body == b"final"


async def test_thousands_of_interim_responses(serve: Serve) -> None:
    # A broken server could send any number; each is skipped without growing the stack.
    async def handler(peer: Peer) -> None:
        await peer.respond(b"HTTP/1.1 100 Continue\r\n\r\n" * 2000 + build_response(b"final"))
        await peer.hold()

    _, pool = await serve(handler)

    response = await pool.request("GET", "/ari/channels")

    assert response.body == b"final"


# -- connections the server closes ----------------------------------------------------------------


async def test_idle_connection_closed_by_server(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        if peer.number == 1:
            await peer.respond(build_response(b"first"))
        else:
            await peer.echo()

    server, pool = await serve(handler)

    await pool.request("GET", "/first")
    await asyncio.wait_for(server.peers[0].finished.wait(), 1)
    # Gives the client's event loop time to see the close.
    await asyncio.sleep(0.05)
    second = await pool.request("GET", "/second")

    assert second.body == b"/second"
    assert server.accepted == 2
    assert len(server.requests) == 2


async def test_close_crossing_request_is_retried(serve: Serve) -> None:
    # The server closes the idle connection as the next request arrives on it, unanswered.
    async def handler(peer: Peer) -> None:
        if peer.number == 1:
            await peer.respond(build_response(b"first"))
            await peer.read_request()
        else:
            await peer.echo()

    server, pool = await serve(handler)

    await pool.request("GET", "/first")
    second = await pool.request("POST", "/second", b'{"x": 1}')

    assert second.body == b"/second"
    assert server.accepted == 2
    assert len(server.requests) == 3
    assert server.requests[2] == server.requests[1]


async def test_close_crossing_request_retried_once(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        if peer.number == 1:
            await peer.respond(build_response(b"first"))
        await peer.read_request()

    server, pool = await serve(handler)

    await pool.request("GET", "/first")
    with pytest.raises(HttpError, match="^server closed the connection$"):
        await pool.request("GET", "/second")

    assert server.accepted == 2


async def test_fresh_connection_closed_unanswered(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()

    server, pool = await serve(handler)

    with pytest.raises(HttpError, match="^server closed the connection$"):
        await pool.request("GET", "/ari/channels")

    assert server.accepted == 1


@pytest.mark.parametrize(
    "partial",
    [
        b"HTTP/1.1 200 OK\r\nContent-Len",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: 1\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
    ],
    ids=["head", "content_length", "chunk", "last_chunk", "trailer", "after_interim"],
)
async def test_close_mid_response(serve: Serve, partial: bytes) -> None:
    async def handler(peer: Peer) -> None:
        await peer.respond(partial)

    _, pool = await serve(handler)

    with pytest.raises(HttpError, match="^server closed the connection mid-response$"):
        await pool.request("GET", "/ari/channels")


async def test_refused_connection(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        pass

    server, pool = await serve(handler)
    await server.close()

    expected = f"^cannot connect to 127.0.0.1:{server.port}: connection refused$"
    with pytest.raises(HttpError, match=expected):
        await pool.request("GET", "/ari/channels")


# -- malformed responses --------------------------------------------------------------------------

CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
FILLER_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Filler: "


def head_of_size(size: int) -> bytes:
    """Build a response whose head, the final CRLF CRLF included, is `size` bytes; its body is "ok"."""
    return FILLER_HEAD + b"a" * (size - len(FILLER_HEAD) - 4) + b"\r\n\r\nok"


MALFORMED = [
    (b"HTTP/1.1 OK\r\nContent-Length: 0\r\n\r\n", "malformed status line"),
    (b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n", "malformed status line"),
    (b"ICY 200 OK\r\nContent-Length: 0\r\n\r\n", "malformed status line"),
    (b"HTTP/1.1 20x OK\r\nContent-Length: 0\r\n\r\n", "malformed status line"),
    (b"<html>oops</html>\r\n\r\n", "malformed status line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nok", "malformed Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\nok", "malformed Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", "malformed Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0_2\r\n\r\nok", "malformed Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", "malformed Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok", "malformed Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\nok", "Content-Length out of range"),
    (CHUNKED_HEAD + b"zz\r\n", "malformed chunk size"),
    (CHUNKED_HEAD + b"\r\n", "malformed chunk size"),
    (CHUNKED_HEAD + b"+2\r\nok\r\n0\r\n\r\n", "malformed chunk size"),
    (CHUNKED_HEAD + b"-6\r\nok\r\n0\r\n\r\n", "malformed chunk size"),
    (head_of_size(MAX_HEAD_BYTES + 1), "response header too long"),
]
MALFORMED_IDS = [
    "status_without_code",
    "http2_version",
    "other_protocol",
    "status_code_not_digits",
    "html",
    "length_letters",
    "length_empty",
    "length_signed",
    "length_underscore",
    "length_list",
    "length_negative",
    "length_over_max",
    "chunk_size_letters",
    "chunk_size_empty",
    "chunk_size_signed",
    "chunk_size_negative",
    "head_over_max",
]


@pytest.mark.parametrize(("response", "error"), MALFORMED, ids=MALFORMED_IDS)
async def test_malformed_response_raises(serve: Serve, response: bytes, error: str) -> None:
    async def handler(peer: Peer) -> None:
        await peer.respond(response)
        await peer.hold()

    _, pool = await serve(handler)

    with pytest.raises(HttpError, match=error):
        await pool.request("GET", "/ari/channels")


@pytest.mark.parametrize(("response", "error"), MALFORMED, ids=MALFORMED_IDS)
async def test_malformed_response_drops_connection(serve: Serve, response: bytes, error: str) -> None:
    async def handler(peer: Peer) -> None:
        if peer.number == 1:
            await peer.respond(response, build_response(b"stale"))
            await peer.hold()
        else:
            await peer.echo()

    server, pool = await serve(handler)

    with pytest.raises(HttpError):
        await pool.request("GET", "/first")
    second = await pool.request("GET", "/second")

    assert second.body == b"/second"
    assert server.accepted == 2


async def test_head_at_max_is_accepted(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        await peer.respond(head_of_size(MAX_HEAD_BYTES))
        await peer.hold()

    _, pool = await serve(handler)

    response = await pool.request("GET", "/ari/channels")

    assert response.body == b"ok"


async def test_endless_head_raises(serve: Serve) -> None:
    # Header lines that never end: the client stops reading at MAX_HEAD_BYTES.
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\n")
        while True:
            await peer.send(b"X-Filler: " + b"a" * 1000 + b"\r\n")

    _, pool = await serve(handler)

    with pytest.raises(HttpError, match="^response header too long$"):
        await pool.request("GET", "/ari/channels")


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
    ],
    ids=["chunk_size_line", "trailer", "until_close"],
)
async def test_endless_body_raises(serve: Serve, monkeypatch: pytest.MonkeyPatch, head: bytes) -> None:
    # Bytes that never complete the body: the client stops reading at MAX_BODY_BYTES.
    monkeypatch.setattr(http, "MAX_BODY_BYTES", 100_000)

    async def handler(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(head)
        while True:
            await peer.send(b"1" * 1000)

    _, pool = await serve(handler)

    with pytest.raises(HttpError, match="^response body too long$"):
        await pool.request("GET", "/ari/channels")


async def test_unsolicited_bytes_drop_idle_connection(serve: Serve) -> None:
    first_sent = asyncio.Event()

    async def handler(peer: Peer) -> None:
        if peer.number == 1:
            await peer.respond(build_response(b"first"))
            await first_sent.wait()
            await peer.send(build_response(b"unsolicited"))
            await peer.hold()
        else:
            await peer.echo()

    server, pool = await serve(handler)

    await pool.request("GET", "/first")
    first_sent.set()
    await asyncio.wait_for(server.peers[0].finished.wait(), 1)
    second = await pool.request("GET", "/second")

    assert second.body == b"/second"
    assert server.accepted == 2


async def test_bytes_after_response_drop_connection(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        if peer.number == 1:
            await peer.respond(build_response(b"first") + build_response(b"extra"))
            await peer.hold()
        else:
            await peer.echo()

    server, pool = await serve(handler)

    first = await pool.request("GET", "/first")
    second = await pool.request("GET", "/second")

    assert first.body == b"first"
    assert second.body == b"/second"
    assert server.accepted == 2


# -- timeouts and cancellation --------------------------------------------------------------------


async def test_unanswered_request_times_out(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        await peer.hold()

    _, pool = await serve(handler, timeout=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()

    with pytest.raises(TimeoutError):
        await pool.request("GET", "/ari/channels")

    elapsed = loop.time() - started
    assert elapsed >= 0.15
    assert elapsed < 0.7


async def test_timed_out_connection_not_reused(serve: Serve) -> None:
    # The first connection responds after the client gave up, and no request may get that response.
    async def handler(peer: Peer) -> None:
        if peer.number == 1:
            await peer.read_request()
            await asyncio.sleep(0.3)
            await peer.send(build_response(b"late"))
            await peer.hold()
        else:
            await peer.echo()

    server, pool = await serve(handler, timeout=0.1)

    with pytest.raises(TimeoutError):
        await pool.request("GET", "/first")
    second = await pool.request("GET", "/second")

    assert second.body == b"/second"
    assert server.accepted == 2


async def test_cancelled_request_drops_connection(serve: Serve) -> None:
    # Were the first connection reused, the response to the cancelled request would arrive after
    # the next request and be taken as its response.
    async def handler(peer: Peer) -> None:
        if peer.number == 1:
            await peer.read_request()
            await peer.read_request()
            await peer.send(build_response(b"stale"))
            await peer.hold()
        else:
            await peer.echo()

    server, pool = await serve(handler)

    task = asyncio.create_task(pool.request("GET", "/first"))
    await wait_until(lambda: len(server.requests) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    second = await pool.request("GET", "/second")

    assert second.body == b"/second"
    assert server.accepted == 2


async def test_cancelled_request_frees_slot(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        if peer.number == 1:
            await peer.hold()
        else:
            await peer.echo()

    server, pool = await serve(handler, limit=1)

    task = asyncio.create_task(pool.request("GET", "/first"))
    await wait_until(lambda: server.accepted == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    second = await pool.request("GET", "/second")

    assert second.body == b"/second"


# -- the connection limit -------------------------------------------------------------------------


async def test_limit_caps_open_connections(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        while (request := await peer.read_request()) is not None:
            await asyncio.sleep(0.01)
            await peer.send(build_response(request.split(b" ", 2)[1]))

    server, pool = await serve(handler, limit=3)

    responses = await asyncio.gather(*(pool.request("GET", f"/item/{index}") for index in range(30)))

    assert [response.body for response in responses] == [f"/item/{i}".encode() for i in range(30)]
    assert server.peak_open == 3
    assert server.accepted == 3


async def test_waiting_for_slot_counts_toward_timeout(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        await peer.hold()

    _, pool = await serve(handler, limit=1, timeout=0.2)
    first = asyncio.create_task(pool.request("GET", "/first"))
    await asyncio.sleep(0.1)
    loop = asyncio.get_running_loop()
    started = loop.time()

    with pytest.raises(TimeoutError):
        await pool.request("GET", "/second")

    assert loop.time() - started < 0.7
    with pytest.raises(TimeoutError):
        await first


# -- the request bytes ----------------------------------------------------------------------------

HEADERS = f"Host: {{authority}}\r\nAuthorization: {AUTHORIZATION}\r\nAccept: application/json\r\n"
JSON_HEADERS = "Content-Type: application/json\r\nContent-Length: {length}\r\n"


@pytest.mark.parametrize(
    ("method", "target", "body", "body_headers"),
    [
        ("GET", "/ari/channels?state=Up", None, ""),
        ("DELETE", "/ari/channels/1?reason=normal", None, ""),
        ("POST", "/ari/channels/1/answer", None, "Content-Length: 0\r\n"),
        ("PUT", "/ari/bridges/1", None, "Content-Length: 0\r\n"),
        ("POST", "/ari/channels/1/variable", '{"value": "é"}'.encode(), JSON_HEADERS.format(length=15)),
        ("DELETE", "/ari/channels/1", b"{}", JSON_HEADERS.format(length=2)),
    ],
    ids=["get", "delete", "post_without_body", "put_without_body", "post_with_body", "delete_with_body"],
)
async def test_request_bytes(
    serve: Serve, method: str, target: str, body: bytes | None, body_headers: str
) -> None:
    async def handler(peer: Peer) -> None:
        await peer.respond(b"HTTP/1.1 204 No Content\r\n\r\n")
        await peer.hold()

    server, pool = await serve(handler)

    await pool.request(method, target, body)

    head = f"{method} {target} HTTP/1.1\r\n{HEADERS}{body_headers}\r\n"
    head = head.replace("{authority}", f"127.0.0.1:{server.port}")
    assert server.requests == [head.encode() + (body or b"")]


# -- idle connections and close() -----------------------------------------------------------------


async def test_connection_idle_past_keepalive_not_reused(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        await peer.echo()

    server, pool = await serve(handler, keepalive=0.05)

    await pool.request("GET", "/first")
    await asyncio.sleep(0.1)
    second = await pool.request("GET", "/second")

    assert second.body == b"/second"
    assert server.accepted == 2
    await asyncio.wait_for(server.peers[0].finished.wait(), 1)


async def test_close_closes_idle_connections(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        await peer.echo()

    server, pool = await serve(handler)
    await asyncio.gather(pool.request("GET", "/first"), pool.request("GET", "/second"))
    assert server.open == 2

    await pool.close()

    await asyncio.wait_for(server.peers[0].finished.wait(), 1)
    await asyncio.wait_for(server.peers[1].finished.wait(), 1)
    assert server.open == 0


async def test_close_fails_request_in_progress(serve: Serve) -> None:
    # The request is on a reused connection, where a close would otherwise be taken for the
    # server's idle close and retried on a new connection.
    async def handler(peer: Peer) -> None:
        await peer.respond(build_response(b"first"))
        await peer.read_request()
        await peer.hold()

    server, pool = await serve(handler)
    await pool.request("GET", "/first")
    task = asyncio.create_task(pool.request("GET", "/second"))
    await wait_until(lambda: len(server.requests) == 2)

    await pool.close()

    with pytest.raises(HttpError):
        await task
    assert server.accepted == 1

