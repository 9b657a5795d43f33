"""Event websocket: delivery in order, reconnects with backoff, logging without the password."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pbx_bridge.ari import AriClient

from .server import APP, PASSWORD, USERNAME, AriServer, cancel, wait_until

LOGGER = "pbx_bridge.ari"


class Recorder:
    """The on_event and on_connect callbacks of one `run`, writing to one shared log."""

    def __init__(self, client: AriClient) -> None:
        self.client = client
        self.log: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.connects = 0
        self.connected_during_on_connect: list[bool] = []
        self.on_connect_delay = 0.0
        self.failing_event_types: set[str] = set()
        self.fail_on_connect = False

    async def on_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.log.append(str(event.get("type")))
        if event.get("type") in self.failing_event_types:
            raise RuntimeError("handler bug")

    async def on_connect(self) -> None:
        self.connects += 1
        self.connected_during_on_connect.append(self.client.connected)
        if self.on_connect_delay:
            await asyncio.sleep(self.on_connect_delay)
        self.log.append("connect")
        if self.fail_on_connect:
            raise RuntimeError("reconcile bug")


@pytest.fixture
def recorder(ari_client: AriClient) -> Recorder:
    return Recorder(ari_client)


@pytest.fixture
async def running(ari_client: AriClient, recorder: Recorder) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(ari_client.run(recorder.on_event, on_connect=recorder.on_connect))
    yield task
    await cancel(task)


def make_client(server: AriServer, **options: Any) -> AriClient:
    settings: dict[str, Any] = {"reconnect_min_delay": 0.01, "reconnect_max_delay": 0.04}
    settings.update(options)
    return AriClient(server.url, USERNAME, PASSWORD, APP, **settings)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == LOGGER and record.levelno == logging.WARNING
    ]


async def wait_connected(server: AriServer, recorder: Recorder, connects: int = 1) -> None:
    await wait_until(lambda: recorder.connects >= connects and len(server.open_websockets) == 1)
    await wait_until(lambda: recorder.log.count("connect") >= connects)


async def test_client_is_not_connected_before_run(ari_client: AriClient) -> None:
    assert ari_client.connected is False


async def test_websocket_request_has_app_and_auth(
    ari_server: AriServer, recorder: Recorder, running: asyncio.Task[None]
) -> None:
    await wait_connected(ari_server, recorder)

    request = ari_server.event_connections[0]
    credentials = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    assert request.path == "/ari/events"
    assert dict(request.query) == {"app": APP, "subscribeAll": "false"}
    assert request.headers["Authorization"] == f"Basic {credentials}"


async def test_connected_while_socket_open(
    ari_server: AriServer, ari_client: AriClient, recorder: Recorder, running: asyncio.Task[None]
) -> None:
    await wait_connected(ari_server, recorder)

    assert ari_client.connected is True
    assert recorder.connected_during_on_connect == [True]


async def test_connect_is_logged_at_info(
    ari_server: AriServer,
    recorder: Recorder,
    running: asyncio.Task[None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)

    await wait_connected(ari_server, recorder)

    infos = [record.getMessage() for record in caplog.records if record.levelno == logging.INFO]
    assert infos == [f"ARI connected to {ari_server.url} app {APP}"]


async def test_events_delivered_in_arrival_order(
    ari_server: AriServer, recorder: Recorder, running: asyncio.Task[None]
) -> None:
    await wait_connected(ari_server, recorder)

    for sequence in range(100):
        await ari_server.send_event({"type": "ChannelVarset", "sequence": sequence})
    await wait_until(lambda: len(recorder.events) == 100)

    assert [event["sequence"] for event in recorder.events] == list(range(100))


async def test_on_connect_finishes_before_first_event(
    ari_server: AriServer, recorder: Recorder, ari_client: AriClient
) -> None:
    recorder.on_connect_delay = 0.05
    task = asyncio.create_task(ari_client.run(recorder.on_event, on_connect=recorder.on_connect))
    try:
        await wait_until(lambda: len(ari_server.open_websockets) == 1)
        await ari_server.send_event({"type": "StasisStart"})
        await wait_until(lambda: len(recorder.events) == 1)
    finally:
        await cancel(task)

    assert recorder.log == ["connect", "StasisStart"]


async def test_binary_frame_is_delivered(
    ari_server: AriServer, recorder: Recorder, running: asyncio.Task[None]
) -> None:
    await wait_connected(ari_server, recorder)

    await ari_server.send_frame(b'{"type": "StasisStart"}')
    await wait_until(lambda: len(recorder.events) == 1)

    assert recorder.events == [{"type": "StasisStart"}]


async def test_malformed_frames_skipped_with_warning(
    ari_server: AriServer,
    recorder: Recorder,
    running: asyncio.Task[None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    await wait_connected(ari_server, recorder)

    await ari_server.send_frame("not json")
    await ari_server.send_frame('["StasisStart"]')
    await ari_server.send_event({"type": "StasisEnd"})
    await wait_until(lambda: len(recorder.events) == 1)

    assert recorder.events == [{"type": "StasisEnd"}]
    warnings = warnings_of(caplog)
    assert len(warnings) == 2
    assert warnings[0].startswith("ARI skipped a malformed event (frame is not JSON")
    assert warnings[0].endswith("): not json")
    assert warnings[1] == (
        'ARI skipped a malformed event (frame is a JSON list, expected an object): ["StasisStart"]'
    )


async def test_handler_exception_logged_and_skipped(
    ari_server: AriServer,
    recorder: Recorder,
    running: asyncio.Task[None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    recorder.failing_event_types = {"StasisStart"}
    await wait_connected(ari_server, recorder)

    await ari_server.send_event({"type": "StasisStart"})
    await ari_server.send_event({"type": "StasisEnd"})
    await wait_until(lambda: len(recorder.events) == 2)

    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert [record.getMessage() for record in errors] == [
        "ARI event handler failed on StasisStart event"
    ]
    assert errors[0].exc_info is not None
    assert recorder.log == ["connect", "StasisStart", "StasisEnd"]
    assert len(ari_server.event_connections) == 1


async def test_on_connect_exception_keeps_events(
    ari_server: AriServer,
    recorder: Recorder,
    running: asyncio.Task[None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    recorder.fail_on_connect = True
    await wait_connected(ari_server, recorder)

    await ari_server.send_event({"type": "StasisStart"})
    await wait_until(lambda: len(recorder.events) == 1)

    errors = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    assert errors == [f"ARI on_connect handler failed for app {APP}"]
    assert len(ari_server.event_connections) == 1


async def test_events_sent_before_drop_are_delivered(
    ari_server: AriServer, recorder: Recorder, running: asyncio.Task[None]
) -> None:
    await wait_connected(ari_server, recorder)

    for sequence in range(3):
        await ari_server.send_event({"type": "ChannelVarset", "sequence": sequence})
    await ari_server.drop_websockets()
    await wait_until(lambda: len(recorder.events) == 3)

    assert [event["sequence"] for event in recorder.events] == [0, 1, 2]


async def test_reconnects_after_socket_drop(ari_server: AriServer, recorder: Recorder) -> None:
    # A longer first delay leaves the poll below time to see the disconnected state.
    client = make_client(ari_server, reconnect_min_delay=0.05, reconnect_max_delay=0.1)
    recorder.client = client
    task = asyncio.create_task(client.run(recorder.on_event, on_connect=recorder.on_connect))
    try:
        await wait_connected(ari_server, recorder)
        assert client.connected is True

        await ari_server.drop_websockets()
        await wait_until(lambda: not client.connected)
        assert recorder.connects == 1

        await wait_connected(ari_server, recorder, connects=2)
        assert client.connected is True
        assert recorder.connected_during_on_connect == [True, True]
    finally:
        await cancel(task)
        await client.close()


async def test_events_after_reconnect_are_delivered(
    ari_server: AriServer, recorder: Recorder, running: asyncio.Task[None]
) -> None:
    await wait_connected(ari_server, recorder)
    await ari_server.send_event({"type": "StasisStart"})
    await wait_until(lambda: len(recorder.events) == 1)

    await ari_server.drop_websockets()
    await wait_connected(ari_server, recorder, connects=2)
    await ari_server.send_event({"type": "StasisEnd"})
    await wait_until(lambda: len(recorder.events) == 2)

    assert recorder.log == ["connect", "StasisStart", "connect", "StasisEnd"]


async def test_on_connect_called_after_every_reconnect(
    ari_server: AriServer, recorder: Recorder, running: asyncio.Task[None]
) -> None:
    await wait_connected(ari_server, recorder)

    for connects in (2, 3):
        await ari_server.drop_websockets()
        await wait_connected(ari_server, recorder, connects=connects)

    assert recorder.connects == 3
    assert len(ari_server.event_connections) == 3


async def test_reconnects_after_refused_connections(
    ari_server: AriServer,
    ari_client: AriClient,
    recorder: Recorder,
    running: asyncio.Task[None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    await wait_connected(ari_server, recorder)

    await ari_server.stop_listening()
    await wait_until(lambda: sum("connection refused" in text for text in warnings_of(caplog)) >= 3)
    assert ari_client.connected is False
    assert recorder.connects == 1

    await ari_server.listen()
    await wait_connected(ari_server, recorder, connects=2)
    assert ari_client.connected is True


async def test_retry_warning_names_delay_and_reason(
    ari_server: AriServer,
    recorder: Recorder,
    running: asyncio.Task[None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    await wait_connected(ari_server, recorder)

    await ari_server.stop_listening()
    await wait_until(lambda: len(warnings_of(caplog)) >= 2)

    first, second = warnings_of(caplog)[:2]
    assert first.startswith(
        f"ARI websocket {ari_server.url} for app {APP}: connection closed by Asterisk (code 1000); "
        "reconnecting in 0.0"
    )
    assert first.endswith(" s (attempt 1)")
    assert second.startswith(
        f"ARI websocket {ari_server.url} for app {APP}: cannot connect to 127.0.0.1:{ari_server.port}: "
        "connection refused; reconnecting in 0.0"
    )
    assert second.endswith(" s (attempt 2)")


async def test_slow_handshake_times_out(ari_server: AriServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    ari_server.events_delay = 0.5
    client = make_client(ari_server, request_timeout=0.05)
    recorder = Recorder(client)

    task = asyncio.create_task(client.run(recorder.on_event, on_connect=recorder.on_connect))
    try:
        await wait_until(lambda: len(warnings_of(caplog)) >= 1)
    finally:
        await cancel(task)
        await client.close()

    assert warnings_of(caplog)[0].startswith(
        f"ARI websocket {ari_server.url} for app {APP}: timed out; reconnecting in 0.0"
    )
    assert recorder.connects == 0


async def test_backoff_grows_while_connections_fail(
    ari_server: AriServer,
    recorder: Recorder,
    running: asyncio.Task[None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    await wait_connected(ari_server, recorder)

    await ari_server.stop_listening()
    await wait_until(lambda: len(warnings_of(caplog)) >= 5)

    attempts = [text.rsplit("(attempt ", 1)[1].rstrip(")") for text in warnings_of(caplog)[:5]]
    assert attempts == ["1", "2", "3", "4", "5"]


async def test_backoff_resets_after_stable_connection(
    ari_server: AriServer, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    client = make_client(ari_server, stable_connection=0.0)
    recorder.client = client
    task = asyncio.create_task(client.run(recorder.on_event, on_connect=recorder.on_connect))
    try:
        for connects in (1, 2, 3):
            await wait_connected(ari_server, recorder, connects=connects)
            await ari_server.drop_websockets()
        await wait_until(lambda: len(warnings_of(caplog)) >= 3)
    finally:
        await cancel(task)
        await client.close()

    attempts = [text.rsplit("(attempt ", 1)[1].rstrip(")") for text in warnings_of(caplog)[:3]]
    assert attempts == ["1", "1", "1"]


async def test_unauthorized_logs_error_naming_user(
    ari_server: AriServer,
    recorder: Recorder,
    running: asyncio.Task[None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    ari_server.reject_events_with = 401

    await wait_until(lambda: len(ari_server.event_connections) >= 3)

    errors = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    assert errors == [
        f"ARI at {ari_server.url} rejected user '{USERNAME}' (401 Unauthorized); check "
        "ari.username and ari.password against Asterisk's ari.conf"
    ]
    assert "websocket handshake rejected: 401 Unauthorized; reconnecting" in warnings_of(caplog)[0]
    assert recorder.connects == 0


async def test_unauthorized_logged_again_after_connect(
    ari_server: AriServer,
    recorder: Recorder,
    running: asyncio.Task[None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    ari_server.reject_events_with = 401
    await wait_until(lambda: len(ari_server.event_connections) >= 2)

    ari_server.reject_events_with = None
    await wait_connected(ari_server, recorder)
    ari_server.reject_events_with = 401
    await ari_server.drop_websockets()
    connections = len(ari_server.event_connections)
    await wait_until(lambda: len(ari_server.event_connections) >= connections + 2)

    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 2


async def test_not_connected_after_cancel(
    ari_server: AriServer, ari_client: AriClient, recorder: Recorder
) -> None:
    task = asyncio.create_task(ari_client.run(recorder.on_event, on_connect=recorder.on_connect))
    await wait_connected(ari_server, recorder)

    await cancel(task)

    assert ari_client.connected is False
    assert task.cancelled()


async def test_run_without_on_connect_delivers_events(
    ari_server: AriServer, ari_client: AriClient, recorder: Recorder
) -> None:
    task = asyncio.create_task(ari_client.run(recorder.on_event))
    try:
        await wait_until(lambda: len(ari_server.open_websockets) == 1)
        await ari_server.send_event({"type": "StasisStart"})
        await wait_until(lambda: len(recorder.events) == 1)
    finally:
        await cancel(task)

    assert recorder.log == ["StasisStart"]


async def test_password_never_logged(
    ari_server: AriServer,
    ari_client: AriClient,
    recorder: Recorder,
    running: asyncio.Task[None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await wait_connected(ari_server, recorder)
    await ari_client.list_channels()
    await ari_server.send_frame("not json")
    recorder.failing_event_types = {"StasisStart"}
    await ari_server.send_event({"type": "StasisStart"})
    await wait_until(lambda: len(recorder.events) == 1)

    ari_server.reject_events_with = 401
    await ari_server.drop_websockets()
    await wait_until(lambda: len(ari_server.event_connections) >= 3)
    ari_server.reject_events_with = None
    await wait_connected(ari_server, recorder, connects=2)
    await ari_server.stop_listening()
    await wait_until(lambda: "connection refused" in caplog.text)

    assert caplog.records
    for record in caplog.records:
        assert PASSWORD not in record.getMessage()
    assert PASSWORD not in caplog.text


async def test_missed_pong_drops_connection(
    ari_server: AriServer, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    ari_server.autoping = False
    client = make_client(ari_server, heartbeat=0.05)
    recorder.client = client
    task = asyncio.create_task(client.run(recorder.on_event, on_connect=recorder.on_connect))
    try:
        await wait_until(lambda: len(warnings_of(caplog)) >= 1)
    finally:
        await cancel(task)
        await client.close()

    assert recorder.connects == 1
    assert "No PONG received after" in warnings_of(caplog)[0]


async def test_run_returns_after_close(
    ari_server: AriServer, ari_client: AriClient, recorder: Recorder
) -> None:
    task = asyncio.create_task(ari_client.run(recorder.on_event, on_connect=recorder.on_connect))
    await wait_connected(ari_server, recorder)

    await ari_client.close()
    await asyncio.wait_for(task, timeout=5)

    assert task.result() is None
    assert ari_client.connected is False
