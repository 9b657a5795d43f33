"""REST responses of the fake: status codes and Asterisk 22's error texts."""

from __future__ import annotations

import asyncio

import aiohttp

from .helpers import AriTestClient, ari_client, basic_auth
from .scripts import Answer
from .server import FakeAsterisk


async def create_outbound(client: AriTestClient, call_id: str, channel_id: str = "out-1") -> str:
    status, body = await client.request("POST", "/channels/create", endpoint="PJSIP/office",
                                        app="calltracking", appArgs=f"outbound,{call_id}",
                                        channelId=channel_id)
    assert status == 200
    return body["id"]


async def test_wrong_password_returns_401(fake_asterisk: FakeAsterisk) -> None:
    async with aiohttp.ClientSession(headers=basic_auth("pbx-bridge", "wrong")) as http:
        async with http.get(f"{fake_asterisk.url}/ari/channels") as response:
            assert response.status == 401
            assert await response.json() == {"message": "Authentication required"}
            assert response.headers["WWW-Authenticate"].startswith("Basic realm=")


async def test_api_key_query_authenticates(fake_asterisk: FakeAsterisk) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fake_asterisk.url}/ari/channels",
                            params={"api_key": "pbx-bridge:secret"}) as response:
            assert response.status == 200
            assert await response.json() == []


async def test_unknown_path_returns_404(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk, connect=False) as client:
        assert await client.request("GET", "/nothing/here") == (404, {"message": "Resource not found"})


async def test_wrong_method_returns_405(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk, connect=False) as client:
        assert await client.request("PUT", "/channels") == (405, {"message": "Invalid method"})


async def test_created_channel_returns_409_before_stasis_start() -> None:
    # A long entry delay keeps the channel out of Stasis for the whole test.
    fake = FakeAsterisk(stasis_entry_delay=60)
    await fake.start()
    try:
        async with ari_client(fake) as client:
            call = await fake.incoming_call("74951110001", caller_number="+79161234567")
            channel_id = await create_outbound(client, call.channel_id)

            answer = await client.request("POST", f"/channels/{channel_id}/dial",
                                          caller=call.channel_id)

            assert answer == (409, {"message": "Channel not in Stasis application"})
    finally:
        await fake.stop()


async def test_created_channel_dials_after_stasis_start(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        call = await fake_asterisk.incoming_call("74951110001", caller_number="+79161234567")
        channel_id = await create_outbound(client, call.channel_id)
        await client.wait_event("StasisStart", channel_id)

        answer = await client.request("POST", f"/channels/{channel_id}/dial", caller=call.channel_id)

        assert answer == (204, None)


async def test_create_carried_out_after_client_gave_up(fake_asterisk: FakeAsterisk) -> None:
    fake_asterisk.delay_responses("POST /channels/create", 0.3)
    async with ari_client(fake_asterisk) as client:
        call = await fake_asterisk.incoming_call("74951110001", caller_number="+79161234567")
        # The client stops waiting and closes the connection before the fake handles the request.
        try:
            await asyncio.wait_for(create_outbound(client, call.channel_id), timeout=0.1)
        except TimeoutError:
            pass

        # Asterisk creates the channel all the same, and it enters Stasis as any created channel.
        start = await client.wait_event("StasisStart", "out-1")

        assert start["args"] == ["outbound", call.channel_id]
        assert fake_asterisk.channel("out-1")["state"] == "Down"


async def test_create_returns_down_channel_with_given_id(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        status, body = await client.request("POST", "/channels/create", endpoint="PJSIP/office",
                                            app="calltracking", channelId="my-id-1")

        assert status == 200
        assert body["id"] == "my-id-1"
        assert body["state"] == "Down"
        assert body["dialplan"]["app_name"] == ""
        assert client.types("my-id-1") == []


async def test_created_channel_start_arrives_with_split_args(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        await client.request("POST", "/channels/create", endpoint="PJSIP/office",
                             app="calltracking", appArgs="outbound,123.4", channelId="out-9")

        start = await client.wait_event("StasisStart", "out-9")

        assert start["args"] == ["outbound", "123.4"]
        assert start["channel"]["dialplan"]["app_data"] == "calltracking,outbound,123.4"
        assert client.types("out-9") == ["ChannelDialplan", "StasisStart"]


async def test_create_without_endpoint_returns_400(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        answer = await client.request("POST", "/channels/create", app="calltracking")

        assert answer == (400, {"message": "Endpoint must be specified"})


async def test_originate_without_app_or_extension_returns_400(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        answer = await client.request("POST", "/channels", endpoint="Local/1@calltracking-inbound")

        assert answer == (400, {"message": "Application or extension must be specified"})


async def test_hangup_of_gone_channel_returns_404(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        assert await client.request("DELETE", "/channels/1.1") == (404, {"message": "Channel not found"})


async def test_hangup_with_unknown_reason_returns_400(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        call = await fake_asterisk.incoming_call("74951110001", caller_number="+79161234567")

        answer = await client.request("DELETE", f"/channels/{call.channel_id}", reason="bored")

        assert answer == (400, {"message": "Invalid reason for hangup reason provided"})


async def test_hangup_reason_sets_destroyed_cause(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        call = await fake_asterisk.incoming_call("74951110001", caller_number="+79161234567")
        channel_id = await create_outbound(client, call.channel_id)
        await client.wait_event("StasisStart", channel_id)

        await client.request("DELETE", f"/channels/{channel_id}", reason="busy")
        destroyed = await client.wait_event("ChannelDestroyed", channel_id)

        assert destroyed["cause"] == 17
        assert destroyed["cause_txt"] == "User busy"


async def test_add_vanished_channel_returns_400(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        _, bridge = await client.request("POST", "/bridges", type="mixing")

        answer = await client.request("POST", f"/bridges/{bridge['id']}/addChannel", channel="9.9")

        assert answer == (400, {"message": "Channel not found"})


async def test_add_without_channel_returns_400(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        _, bridge = await client.request("POST", "/bridges", type="mixing")

        answer = await client.request("POST", f"/bridges/{bridge['id']}/addChannel")

        assert answer == (400, {"message": "Missing parameter channel"})


async def test_add_channel_outside_stasis_returns_422(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        _, bridge = await client.request("POST", "/bridges", type="mixing")
        _, first_half = await client.request("POST", "/channels", endpoint="Local/1@qa",
                                             extension="s", context="qa")

        answer = await client.request("POST", f"/bridges/{bridge['id']}/addChannel",
                                      channel=first_half["id"])

        assert answer == (422, {"message": "Channel not in Stasis application"})


async def test_unknown_bridge_returns_404(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        answer = await client.request("POST", "/bridges/nope/addChannel", channel="1.1")

        assert answer == (404, {"message": "Bridge not found"})


async def test_bridge_id_clash_returns_409(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        await client.request("POST", "/bridges", bridgeId="b-1")

        answer = await client.request("POST", "/bridges", bridgeId="b-1")

        assert answer == (409, {"message": "Bridge with id 'b-1' already exists"})


async def test_record_missing_folder_returns_500(fake_asterisk: FakeAsterisk) -> None:
    fake_asterisk.fail_recordings(status=500)
    async with ari_client(fake_asterisk) as client:
        _, bridge = await client.request("POST", "/bridges", type="mixing")

        answer = await client.request("POST", f"/bridges/{bridge['id']}/record",
                                      name="calltracking/x", format="wav")

        assert answer == (500, {"message": "Internal Server Error"})


async def test_record_failure_limited_to_given_times(fake_asterisk: FakeAsterisk) -> None:
    fake_asterisk.fail_recordings(status=500, times=1)
    async with ari_client(fake_asterisk) as client:
        _, bridge = await client.request("POST", "/bridges", type="mixing")
        path = f"/bridges/{bridge['id']}/record"

        first, _ = await client.request("POST", path, name="r1", format="wav")
        second, _ = await client.request("POST", path, name="r2", format="wav")

        assert first == 500
        assert second == 201


async def test_record_unknown_format_returns_422(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        _, bridge = await client.request("POST", "/bridges", type="mixing")

        answer = await client.request("POST", f"/bridges/{bridge['id']}/record",
                                      name="r1", format="mp7")

        assert answer == (422, {"message": "specified format is unknown on this system"})


async def test_record_name_clash_returns_409(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        _, bridge = await client.request("POST", "/bridges", type="mixing")
        path = f"/bridges/{bridge['id']}/record"
        await client.request("POST", path, name="r1", format="wav")
        await client.request("POST", "/recordings/live/r1/stop")

        answer = await client.request("POST", path, name="r1", format="wav", ifExists="fail")

        assert answer == (409, {"message": "Recording 'r1' already exists and can not be overwritten"})


async def test_record_returns_201_queued(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        _, bridge = await client.request("POST", "/bridges", type="mixing")

        answer = await client.request("POST", f"/bridges/{bridge['id']}/record",
                                      name="calltracking/2026/12/04/1.1", format="wav")

        assert answer == (201, {"name": "calltracking/2026/12/04/1.1", "format": "wav",
                                "state": "queued", "target_uri": f"bridge:{bridge['id']}"})


async def test_stopped_recording_is_stored(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        _, bridge = await client.request("POST", "/bridges", type="mixing")
        await client.request("POST", f"/bridges/{bridge['id']}/record", name="cal/1", format="wav")
        await client.request("POST", "/recordings/live/cal%2F1/stop")

        assert await client.request("GET", "/recordings/live/cal%2F1") == (
            404, {"message": "Recording not found"})
        assert await client.request("GET", "/recordings/stored/cal%2F1") == (
            200, {"name": "cal/1", "format": "wav"})


async def test_answer_of_ringing_leg_returns_412(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        call = await fake_asterisk.incoming_call("74951110001", caller_number="+79161234567")
        channel_id = await create_outbound(client, call.channel_id)
        await client.wait_event("StasisStart", channel_id)
        await client.request("POST", f"/channels/{channel_id}/dial", caller=call.channel_id)
        await fake_asterisk.wait_for(lambda: fake_asterisk.is_ringing("PJSIP/office"))

        answer = await client.request("POST", f"/channels/{channel_id}/answer")

        assert answer == (412, {"message": "Channel in invalid state"})


async def test_second_dial_returns_409(fake_asterisk: FakeAsterisk) -> None:
    fake_asterisk.script_endpoint("PJSIP/office", Answer(after=5))
    async with ari_client(fake_asterisk) as client:
        call = await fake_asterisk.incoming_call("74951110001", caller_number="+79161234567")
        channel_id = await create_outbound(client, call.channel_id)
        await client.wait_event("StasisStart", channel_id)
        await client.request("POST", f"/channels/{channel_id}/dial")
        await fake_asterisk.wait_for(lambda: fake_asterisk.is_ringing("PJSIP/office"))

        answer = await client.request("POST", f"/channels/{channel_id}/dial")

        assert answer == (409, {"message": "Channel is not in the 'Down' state"})


async def test_dial_of_inbound_channel_returns_409(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        call = await fake_asterisk.incoming_call("74951110001", caller_number="+79161234567")

        answer = await client.request("POST", f"/channels/{call.channel_id}/dial")

        assert answer == (409, {"message": "Channel is not in the 'Down' state"})


async def test_application_lists_its_channels(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        call = await fake_asterisk.incoming_call("74951110001", caller_number="+79161234567")

        status, application = await client.request("GET", "/applications/calltracking")

        assert status == 200
        assert application == {"name": "calltracking", "channel_ids": [call.channel_id],
                               "bridge_ids": [], "endpoint_ids": [], "device_names": [],
                               "events_allowed": [], "events_disallowed": []}


async def test_unknown_application_returns_404(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        answer = await client.request("GET", "/applications/other")

        assert answer == (404, {"message": "Application not found"})


async def test_requests_are_recorded(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        await client.request("POST", "/bridges", type="mixing", name="ct-1")

    recorded = [request for request in fake_asterisk.requests if request.method == "POST"]
    assert recorded[0].rest == "POST /bridges"
    assert recorded[0].params == {"type": "mixing", "name": "ct-1"}
    assert recorded[0].status == 200


async def test_event_filter_limits_delivered_events(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        status, application = await client.request(
            "PUT", "/applications/calltracking/eventFilter",
            body={"allowed": [{"type": "StasisStart"}, {"type": "StasisEnd"}]},
        )
        call = await fake_asterisk.incoming_call("74951110001", caller_number="+79161234567")
        await fake_asterisk.caller_hangs_up(call.channel_id, cause=16)

    assert status == 200
    assert application["events_allowed"] == [{"type": "StasisEnd"}, {"type": "StasisStart"}]
    assert application["events_disallowed"] == []
    assert [event["type"] for event in fake_asterisk.events] == ["StasisStart", "StasisEnd"]


async def test_event_filter_rejects_malformed_body(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        status, body = await client.request(
            "PUT", "/applications/calltracking/eventFilter", body={"allowed": ["StasisStart"]}
        )

    assert status == 400
    assert body == {"message": "Invalid format definition"}
