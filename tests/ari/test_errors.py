"""Error mapping: Asterisk's error responses and connection failures become the package's exceptions."""

from __future__ import annotations

import asyncio

import pytest

from pbx_bridge.ari import (
    AriClient,
    AriError,
    AriUnavailable,
    BadRequest,
    Conflict,
    InvalidState,
    NotFound,
    NotInStasis,
    ServerError,
    Unauthorized,
)

from .server import APP, PASSWORD, USERNAME, AriServer, wait_until

CHANNEL = "1796411651.26"
BRIDGE = "b8f32f6f-6918-415b-b526-4474ad309f46"


async def test_404_is_not_found(ari_server: AriServer, ari_client: AriClient) -> None:
    ari_server.reply("DELETE", f"/ari/channels/{CHANNEL}", 404, {"message": "Channel not found"})

    with pytest.raises(NotFound) as raised:
        await ari_client.hangup(CHANNEL)

    assert str(raised.value) == f"DELETE /channels/{{channelId}} on {CHANNEL} failed: 404 Channel not found"
    assert raised.value.operation == "DELETE /channels/{channelId}"
    assert raised.value.resource_id == CHANNEL
    assert raised.value.status == 404
    assert raised.value.asterisk_message == "Channel not found"


async def test_add_channel_vanished_is_not_found(
    ari_server: AriServer, ari_client: AriClient
) -> None:
    ari_server.reply("POST", f"/ari/bridges/{BRIDGE}/addChannel", 400, {"message": "Channel not found"})

    with pytest.raises(NotFound) as raised:
        await ari_client.add_channel(BRIDGE, CHANNEL)

    assert str(raised.value) == (
        f"POST /bridges/{{bridgeId}}/addChannel on {CHANNEL} failed: 400 Channel not found"
    )
    assert raised.value.resource_id == CHANNEL


async def test_409_not_in_stasis_is_not_in_stasis(ari_server: AriServer, ari_client: AriClient) -> None:
    ari_server.reply(
        "POST", f"/ari/channels/{CHANNEL}/dial", 409, {"message": "Channel not in Stasis application"}
    )

    with pytest.raises(NotInStasis) as raised:
        await ari_client.dial(CHANNEL, caller="1796411651.25", timeout=20)

    assert str(raised.value) == (
        f"POST /channels/{{channelId}}/dial on {CHANNEL} failed: 409 Channel not in Stasis application"
    )


async def test_add_channel_422_is_not_in_stasis(
    ari_server: AriServer, ari_client: AriClient
) -> None:
    ari_server.reply(
        "POST",
        f"/ari/bridges/{BRIDGE}/addChannel",
        422,
        {"message": "Channel not in Stasis application"},
    )

    with pytest.raises(NotInStasis) as raised:
        await ari_client.add_channel(BRIDGE, CHANNEL)

    assert raised.value.status == 422


async def test_other_409_is_conflict(ari_server: AriServer, ari_client: AriClient) -> None:
    message = (
        "A recording with the same name already exists on the system and can not be overwritten "
        "because it is in progress or ifExists=fail"
    )
    ari_server.reply("POST", f"/ari/bridges/{BRIDGE}/record", 409, {"message": message})

    with pytest.raises(Conflict) as raised:
        await ari_client.record_bridge(BRIDGE, name="ct-1")

    assert str(raised.value) == f"POST /bridges/{{bridgeId}}/record on {BRIDGE} failed: 409 {message}"


async def test_412_is_invalid_state(ari_server: AriServer, ari_client: AriClient) -> None:
    ari_server.reply("POST", f"/ari/channels/{CHANNEL}/ring", 412, {"message": "Channel in invalid state"})

    with pytest.raises(InvalidState) as raised:
        await ari_client.ring(CHANNEL)

    assert str(raised.value) == (
        f"POST /channels/{{channelId}}/ring on {CHANNEL} failed: 412 Channel in invalid state"
    )


async def test_other_400_is_bad_request(ari_server: AriServer, ari_client: AriClient) -> None:
    ari_server.reply(
        "DELETE", f"/ari/channels/{CHANNEL}", 400, {"message": "Invalid reason for hangup provided"}
    )

    with pytest.raises(BadRequest) as raised:
        await ari_client.hangup(CHANNEL, reason="whatever")

    assert str(raised.value) == (
        f"DELETE /channels/{{channelId}} on {CHANNEL} failed: 400 Invalid reason for hangup provided"
    )


async def test_other_422_is_bad_request(ari_server: AriServer, ari_client: AriClient) -> None:
    message = "The format specified is unknown on this system"
    ari_server.reply("POST", f"/ari/bridges/{BRIDGE}/record", 422, {"message": message})

    with pytest.raises(BadRequest) as raised:
        await ari_client.record_bridge(BRIDGE, name="ct-1", format="mp3")

    assert str(raised.value) == f"POST /bridges/{{bridgeId}}/record on {BRIDGE} failed: 422 {message}"


async def test_500_is_server_error(ari_server: AriServer, ari_client: AriClient) -> None:
    ari_server.reply("POST", f"/ari/bridges/{BRIDGE}/record", 500, {"message": "Internal Server Error"})

    with pytest.raises(ServerError) as raised:
        await ari_client.record_bridge(BRIDGE, name="ct-1")

    assert str(raised.value) == (
        f"POST /bridges/{{bridgeId}}/record on {BRIDGE} failed: 500 Internal Server Error"
    )


async def test_503_is_server_error(ari_server: AriServer, ari_client: AriClient) -> None:
    ari_server.reply("GET", "/ari/channels", 503, {"message": "Service Unavailable"})

    with pytest.raises(ServerError) as raised:
        await ari_client.list_channels()

    assert str(raised.value) == "GET /channels failed: 503 Service Unavailable"


async def test_401_is_unauthorized(ari_server: AriServer, ari_client: AriClient) -> None:
    ari_server.reply("GET", "/ari/channels", 401, {"message": "Authentication required"})

    with pytest.raises(Unauthorized) as raised:
        await ari_client.list_channels()

    assert str(raised.value) == "GET /channels failed: 401 Authentication required"


async def test_error_without_json_body_keeps_text(ari_server: AriServer, ari_client: AriClient) -> None:
    ari_server.reply("GET", "/ari/channels", 502, "upstream down")

    with pytest.raises(ServerError) as raised:
        await ari_client.list_channels()

    assert raised.value.asterisk_message == "upstream down"


async def test_long_error_message_is_cut(ari_server: AriServer, ari_client: AriClient) -> None:
    ari_server.reply("DELETE", f"/ari/channels/{CHANNEL}", 404, {"message": "Channel not found " + "x" * 5000})

    with pytest.raises(NotFound) as raised:
        await ari_client.hangup(CHANNEL)

    assert raised.value.asterisk_message == "Channel not found " + "x" * 282 + "..."
    assert len(str(raised.value)) < 400


async def test_error_without_body_uses_reason(ari_server: AriServer, ari_client: AriClient) -> None:
    ari_server.reply("GET", "/ari/channels", 500)

    with pytest.raises(ServerError) as raised:
        await ari_client.list_channels()

    assert raised.value.asterisk_message == "Internal Server Error"


async def test_success_with_invalid_json_is_server_error(
    ari_server: AriServer, ari_client: AriClient
) -> None:
    ari_server.reply("GET", "/ari/channels", 200, "<html>not json</html>")

    with pytest.raises(ServerError) as raised:
        await ari_client.list_channels()

    assert str(raised.value) == "GET /channels failed: 200 response is not JSON: <html>not json</html>"


async def test_connection_refused_is_unavailable(ari_server: AriServer, ari_client: AriClient) -> None:
    await ari_server.stop_listening()

    with pytest.raises(AriUnavailable) as raised:
        await ari_client.answer(CHANNEL)

    assert str(raised.value) == (
        f"POST /channels/{{channelId}}/answer on {CHANNEL} failed: "
        f"cannot connect to 127.0.0.1:{ari_server.port}: connection refused"
    )
    assert raised.value.status is None


async def test_timeout_is_unavailable(ari_server: AriServer) -> None:
    ari_server.rest_delay = 0.5
    client = AriClient(ari_server.url, USERNAME, PASSWORD, APP, request_timeout=0.05)

    try:
        with pytest.raises(AriUnavailable) as raised:
            await client.answer(CHANNEL)
    finally:
        await client.close()

    assert str(raised.value) == f"POST /channels/{{channelId}}/answer on {CHANNEL} failed: timed out"


async def test_staggered_requests_each_time_out(ari_server: AriServer) -> None:
    ari_server.rest_delay = 0.3
    client = AriClient(ari_server.url, USERNAME, PASSWORD, APP, request_timeout=0.05)

    async def answer_after(delay: float) -> AriUnavailable | None:
        await asyncio.sleep(delay)
        try:
            await client.answer(CHANNEL)
        except AriUnavailable as error:
            return error
        return None

    # Two requests start before the first deadline and must time out though no request starts
    # until after the server has responded to them. The last one starts when none is in flight.
    try:
        errors = await asyncio.gather(*(answer_after(delay) for delay in (0, 0.02, 0.03, 0.4)))
    finally:
        await client.close()

    for error in errors:
        assert str(error) == f"POST /channels/{{channelId}}/answer on {CHANNEL} failed: timed out"


async def test_request_after_timeout_succeeds(ari_server: AriServer) -> None:
    ari_server.rest_delay = 0.5
    client = AriClient(ari_server.url, USERNAME, PASSWORD, APP, request_timeout=0.05)

    try:
        with pytest.raises(AriUnavailable):
            await client.answer(CHANNEL)
        ari_server.rest_delay = 0
        result = await client.answer(CHANNEL)
    finally:
        await client.close()

    assert result is None
    assert len(ari_server.requests) == 2


async def test_cancelled_request_raises_cancelled_error(
    ari_server: AriServer, ari_client: AriClient
) -> None:
    ari_server.rest_delay = 0.5
    request = asyncio.create_task(ari_client.answer(CHANNEL))
    await wait_until(lambda: len(ari_server.requests) == 1)

    request.cancel()

    with pytest.raises(asyncio.CancelledError):
        await request


async def test_timeout_during_cancellation_is_unavailable(ari_server: AriServer) -> None:
    ari_server.rest_delay = 0.5
    client = AriClient(ari_server.url, USERNAME, PASSWORD, APP, request_timeout=0.05)
    cleanup_errors: list[AriUnavailable] = []

    # Call flows hang up in their cleanup when their task is cancelled. A timeout of that request
    # is still a timeout, and the task's own cancellation goes on afterwards.
    async def wait_then_hang_up() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            try:
                await client.hangup(CHANNEL)
            except AriUnavailable as error:
                cleanup_errors.append(error)
            raise

    call = asyncio.create_task(wait_then_hang_up())
    await asyncio.sleep(0)
    call.cancel()
    try:
        with pytest.raises(asyncio.CancelledError):
            await call
    finally:
        await client.close()

    assert [str(error) for error in cleanup_errors] == [
        f"DELETE /channels/{{channelId}} on {CHANNEL} failed: timed out"
    ]


async def test_connection_reset_is_unavailable(ari_server: AriServer, ari_client: AriClient) -> None:
    ari_server.reset_rest_connections = True

    with pytest.raises(AriUnavailable) as raised:
        await ari_client.answer(CHANNEL)

    assert str(raised.value) == (
        f"POST /channels/{{channelId}}/answer on {CHANNEL} failed: server closed the connection"
    )


async def test_every_error_is_an_ari_error(ari_server: AriServer, ari_client: AriClient) -> None:
    ari_server.reply("GET", "/ari/channels", 418, {"message": "I'm a teapot"})

    with pytest.raises(AriError) as raised:
        await ari_client.list_channels()

    assert type(raised.value) is AriError
    assert str(raised.value) == "GET /channels failed: 418 I'm a teapot"


@pytest.mark.parametrize("status", [400, 401, 404, 409, 412, 422, 500])
async def test_error_text_never_contains_password(
    ari_server: AriServer, ari_client: AriClient, status: int
) -> None:
    ari_server.reply("GET", "/ari/channels", status, {"message": "rejected"})

    with pytest.raises(AriError) as raised:
        await ari_client.list_channels()

    assert PASSWORD not in str(raised.value)
    assert PASSWORD not in repr(raised.value)


async def test_unavailable_text_never_contains_password(
    ari_server: AriServer, ari_client: AriClient
) -> None:
    await ari_server.stop_listening()

    with pytest.raises(AriUnavailable) as raised:
        await ari_client.list_channels()

    assert PASSWORD not in str(raised.value)
    assert PASSWORD not in repr(raised.value.__cause__)
