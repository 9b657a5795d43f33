"""REST requests: paths, query parameters and bodies as the ARI specification of Asterisk 22 sets."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pbx_bridge.ari import AriClient, AriUnavailable
from pbx_bridge.ari.client import CONNECTION_LIMIT
from pbx_bridge.config import AriConfig

from .server import APP, PASSWORD, USERNAME, AriServer

Call = Callable[[AriClient], Awaitable[Any]]

# (client call, method, raw path, query, JSON body)
REQUESTS: list[tuple[str, Call, str, str, dict[str, str], Any]] = [
    (
        "get_application",
        lambda client: client.get_application(),
        "GET",
        "/ari/applications/calltracking",
        {},
        None,
    ),
    ("list_channels", lambda client: client.list_channels(), "GET", "/ari/channels", {}, None),
    (
        "get_channel",
        lambda client: client.get_channel("1796411651.26"),
        "GET",
        "/ari/channels/1796411651.26",
        {},
        None,
    ),
    (
        "ring",
        lambda client: client.ring("1796411651.26"),
        "POST",
        "/ari/channels/1796411651.26/ring",
        {},
        None,
    ),
    (
        "answer",
        lambda client: client.answer("1796411651.26"),
        "POST",
        "/ari/channels/1796411651.26/answer",
        {},
        None,
    ),
    (
        "hangup_default_reason",
        lambda client: client.hangup("1796411651.26"),
        "DELETE",
        "/ari/channels/1796411651.26",
        {"reason": "normal"},
        None,
    ),
    (
        "hangup_busy",
        lambda client: client.hangup("1796411651.26", reason="busy"),
        "DELETE",
        "/ari/channels/1796411651.26",
        {"reason": "busy"},
        None,
    ),
    (
        "continue_in_dialplan",
        lambda client: client.continue_in_dialplan(
            "1796411651.26", context="calltracking-fallback", extension="74951110001", priority=1
        ),
        "POST",
        "/ari/channels/1796411651.26/continue",
        {"context": "calltracking-fallback", "extension": "74951110001", "priority": "1"},
        None,
    ),
    (
        "continue_context_only",
        lambda client: client.continue_in_dialplan("1796411651.26", context="calltracking-fallback"),
        "POST",
        "/ari/channels/1796411651.26/continue",
        {"context": "calltracking-fallback"},
        None,
    ),
    (
        "get_variable",
        lambda client: client.get_variable("1796411651.26", "CALLERID(num)"),
        "GET",
        "/ari/channels/1796411651.26/variable",
        {"variable": "CALLERID(num)"},
        None,
    ),
    (
        "set_variable",
        lambda client: client.set_variable("1796411651.26", "CT_DESTINATION", "PJSIP/office"),
        "POST",
        "/ari/channels/1796411651.26/variable",
        {"variable": "CT_DESTINATION", "value": "PJSIP/office"},
        None,
    ),
    (
        "set_variable_unset",
        lambda client: client.set_variable("1796411651.26", "CT_DESTINATION"),
        "POST",
        "/ari/channels/1796411651.26/variable",
        {"variable": "CT_DESTINATION"},
        None,
    ),
    (
        "create_channel",
        lambda client: client.create_channel(
            endpoint="PJSIP/office",
            channel_id="1796411651.26-out",
            app_args="outbound,1796411651.26",
        ),
        "POST",
        "/ari/channels/create",
        {
            "endpoint": "PJSIP/office",
            "app": "calltracking",
            "appArgs": "outbound,1796411651.26",
            "channelId": "1796411651.26-out",
        },
        None,
    ),
    (
        "create_channel_with_variables",
        lambda client: client.create_channel(
            endpoint="PJSIP/office",
            channel_id="1796411651.26-out",
            app_args="outbound,1796411651.26",
            other_channel_id="1796411651.26-out2",
            variables={"CALLERID(num)": "+79161234567", "RING_TIMEOUT": 20},
        ),
        "POST",
        "/ari/channels/create",
        {
            "endpoint": "PJSIP/office",
            "app": "calltracking",
            "appArgs": "outbound,1796411651.26",
            "channelId": "1796411651.26-out",
            "otherChannelId": "1796411651.26-out2",
        },
        {"variables": {"CALLERID(num)": "+79161234567", "RING_TIMEOUT": "20"}},
    ),
    (
        "dial",
        lambda client: client.dial("1796411651.27", caller="1796411651.26", timeout=20),
        "POST",
        "/ari/channels/1796411651.27/dial",
        {"caller": "1796411651.26", "timeout": "20"},
        None,
    ),
    (
        "dial_without_options",
        lambda client: client.dial("1796411651.27"),
        "POST",
        "/ari/channels/1796411651.27/dial",
        {},
        None,
    ),
    (
        "originate_into_dialplan",
        lambda client: client.originate(
            endpoint="Local/74951110001@from-trunk",
            extension="s",
            context="caller-sim",
            priority=1,
            caller_id="+79161234567",
            timeout=30,
            variables={"QA_CASE": "answered"},
        ),
        "POST",
        "/ari/channels",
        {
            "endpoint": "Local/74951110001@from-trunk",
            "extension": "s",
            "context": "caller-sim",
            "priority": "1",
            "callerId": "+79161234567",
            "timeout": "30",
        },
        {"variables": {"QA_CASE": "answered"}},
    ),
    (
        "originate_into_app",
        lambda client: client.originate(
            endpoint="PJSIP/office", channel_id="qa-1", app="qa", app_args="probe"
        ),
        "POST",
        "/ari/channels",
        {"endpoint": "PJSIP/office", "channelId": "qa-1", "app": "qa", "appArgs": "probe"},
        None,
    ),
    (
        "create_bridge",
        lambda client: client.create_bridge(bridge_id="bridge-1", name="ct-1796411651.26"),
        "POST",
        "/ari/bridges",
        {"type": "mixing", "bridgeId": "bridge-1", "name": "ct-1796411651.26"},
        None,
    ),
    (
        "add_channel",
        lambda client: client.add_channel("bridge-1", "1796411651.26"),
        "POST",
        "/ari/bridges/bridge-1/addChannel",
        {"channel": "1796411651.26"},
        None,
    ),
    (
        "add_channel_several",
        lambda client: client.add_channel("bridge-1", "1796411651.25", "1796411651.26"),
        "POST",
        "/ari/bridges/bridge-1/addChannel",
        {"channel": "1796411651.25,1796411651.26"},
        None,
    ),
    (
        "destroy_bridge",
        lambda client: client.destroy_bridge("bridge-1"),
        "DELETE",
        "/ari/bridges/bridge-1",
        {},
        None,
    ),
    (
        "record_bridge_defaults",
        lambda client: client.record_bridge("bridge-1", name="ct-1796411651.26"),
        "POST",
        "/ari/bridges/bridge-1/record",
        {"name": "ct-1796411651.26", "format": "wav", "ifExists": "fail", "beep": "false"},
        None,
    ),
    (
        "record_bridge_options",
        lambda client: client.record_bridge(
            "bridge-1",
            name="ct-1796411651.26",
            format="gsm",
            if_exists="overwrite",
            max_duration=3600,
            beep=True,
        ),
        "POST",
        "/ari/bridges/bridge-1/record",
        {
            "name": "ct-1796411651.26",
            "format": "gsm",
            "ifExists": "overwrite",
            "maxDurationSeconds": "3600",
            "beep": "true",
        },
        None,
    ),
    (
        "stop_recording",
        lambda client: client.stop_recording("ct-1796411651.26"),
        "POST",
        "/ari/recordings/live/ct-1796411651.26/stop",
        {},
        None,
    ),
    (
        "get_stored_recording",
        lambda client: client.get_stored_recording("ct-1796411651.26"),
        "GET",
        "/ari/recordings/stored/ct-1796411651.26",
        {},
        None,
    ),
]


@pytest.mark.parametrize(
    ("call", "method", "raw_path", "query", "body"),
    [request[1:] for request in REQUESTS],
    ids=[request[0] for request in REQUESTS],
)
async def test_request_matches_specification(
    ari_server: AriServer,
    ari_client: AriClient,
    call: Call,
    method: str,
    raw_path: str,
    query: dict[str, str],
    body: Any,
) -> None:
    await call(ari_client)

    assert len(ari_server.requests) == 1
    request = ari_server.requests[0]
    assert request.method == method
    assert request.raw_path == raw_path
    assert request.query == query
    assert request.body == body


async def test_request_sends_basic_auth(ari_server: AriServer, ari_client: AriClient) -> None:
    await ari_client.list_channels()

    expected = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    assert ari_server.requests[0].authorization == f"Basic {expected}"


async def test_recording_folders_encoded_in_path(
    ari_server: AriServer, ari_client: AriClient
) -> None:
    await ari_client.get_stored_recording("calltracking/2026/12/04/1796411651.26")

    assert ari_server.requests[0].raw_path == (
        "/ari/recordings/stored/calltracking%2F2026%2F12%2F04%2F1796411651.26"
    )


async def test_channel_id_is_percent_encoded(ari_server: AriServer, ari_client: AriClient) -> None:
    await ari_client.get_channel("odd id?#")

    assert ari_server.requests[0].raw_path == "/ari/channels/odd%20id%3F%23"


async def test_json_response_is_parsed(ari_server: AriServer, ari_client: AriClient) -> None:
    channel = {"id": "1796411651.26", "name": "PJSIP/trunk-00000000", "state": "Ring"}
    ari_server.reply("GET", "/ari/channels/1796411651.26", 200, channel)

    assert await ari_client.get_channel("1796411651.26") == channel


async def test_response_with_nan_is_parsed(ari_server: AriServer, ari_client: AriClient) -> None:
    # orjson rejects NaN, so the json module reads the body.
    ari_server.reply("GET", "/ari/channels/1796411651.26", 200, '{"id": "1796411651.26", "x": NaN}')

    channel = await ari_client.get_channel("1796411651.26")

    assert channel["id"] == "1796411651.26"
    assert str(channel["x"]) == "nan"


async def test_json_list_response_is_parsed(ari_server: AriServer, ari_client: AriClient) -> None:
    ari_server.reply("GET", "/ari/channels", 200, [{"id": "1"}, {"id": "2"}])

    assert await ari_client.list_channels() == [{"id": "1"}, {"id": "2"}]


async def test_no_content_returns_none(ari_server: AriServer, ari_client: AriClient) -> None:
    ari_server.reply("POST", "/ari/channels/1796411651.26/ring", 204)

    assert await ari_client.ring("1796411651.26") is None


async def test_created_recording_is_parsed(
    ari_server: AriServer, ari_client: AriClient
) -> None:
    live = {"name": "ct-1", "format": "wav", "state": "queued", "target_uri": "bridge:bridge-1"}
    ari_server.reply("POST", "/ari/bridges/bridge-1/record", 201, live)

    assert await ari_client.record_bridge("bridge-1", name="ct-1") == live


async def test_url_with_ari_suffix_is_not_doubled(ari_server: AriServer) -> None:
    client = AriClient(ari_server.url + "/ari/", USERNAME, PASSWORD, APP)
    try:
        await client.list_channels()
    finally:
        await client.close()

    assert ari_server.requests[0].raw_path == "/ari/channels"


async def test_url_path_prefix_is_kept(ari_server: AriServer) -> None:
    client = AriClient(ari_server.url + "/asterisk", USERNAME, PASSWORD, APP)
    try:
        await client.list_channels()
    finally:
        await client.close()

    assert ari_server.requests[0].raw_path == "/asterisk/ari/channels"
    assert client.events_url == f"ws://127.0.0.1:{ari_server.port}/asterisk/ari/events"


def test_from_config_takes_every_setting() -> None:
    config = AriConfig(
        url="https://pbx.example.test:8089",
        username="tracker",
        password=PASSWORD,
        app="ct",
        reconnect_min_delay=1.0,
        reconnect_max_delay=8.0,
        request_timeout=3.0,
    )

    client = AriClient.from_config(config)

    assert client.app == "ct"
    assert client.username == "tracker"
    assert client.events_url == "wss://pbx.example.test:8089/ari/events"
    assert client.reconnect_min_delay == 1.0
    assert client.reconnect_max_delay == 8.0
    assert client.request_timeout == 3.0


def test_client_repr_hides_password() -> None:
    client = AriClient("http://127.0.0.1:8088", USERNAME, PASSWORD, APP)

    assert PASSWORD not in repr(client)
    assert repr(client) == "AriClient('http://127.0.0.1:8088', user 'pbx-bridge', app 'calltracking')"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://127.0.0.1:8088", "must be http://HOST:PORT"),
        ("127.0.0.1:8088", "must be http://HOST:PORT"),
        (f"http://{USERNAME}:{PASSWORD}@127.0.0.1:8088", "must not contain credentials"),
    ],
)
def test_invalid_url_is_rejected(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as raised:
        AriClient(url, USERNAME, PASSWORD, APP)

    assert PASSWORD not in str(raised.value)


def test_invalid_reconnect_delays_are_rejected() -> None:
    with pytest.raises(ValueError, match="0 < min <= max"):
        AriClient("http://127.0.0.1:8088", USERNAME, PASSWORD, APP, reconnect_min_delay=5, reconnect_max_delay=1)


async def test_concurrent_requests_share_limited_pool(
    ari_server: AriServer, ari_client: AriClient
) -> None:
    ari_server.rest_delay = 0.02

    results = await asyncio.gather(*(ari_client.ring(f"channel-{index}") for index in range(200)))

    assert results == [None] * 200
    assert len(ari_server.requests) == 200
    assert 1 < ari_server.rest_peak_in_flight <= CONNECTION_LIMIT


async def test_request_after_close_is_unavailable(ari_server: AriServer, ari_client: AriClient) -> None:
    await ari_client.list_channels()
    await ari_client.close()

    with pytest.raises(AriUnavailable) as raised:
        await ari_client.list_channels()

    assert str(raised.value) == "GET /channels failed: client is closed"
    assert len(ari_server.requests) == 1
