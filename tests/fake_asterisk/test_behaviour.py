"""Event sequences of the scripted lines, inbound calls, Stasis failure and websocket drops."""

from __future__ import annotations

from typing import Any

from .helpers import AriTestClient, ari_client
from .scripts import Answer, Busy, Fail, NoAnswer
from .server import FakeAsterisk


async def dial_office(fake: FakeAsterisk, client: AriTestClient, timeout: int = 0) -> tuple[str, str]:
    """Place an inbound call and dial PJSIP/office for it; return (inbound id, outbound id)."""
    call = await fake.incoming_call("74951110001", caller_number="+79161234567", caller_name="Ivan")
    _, channel = await client.request("POST", "/channels/create", endpoint="PJSIP/office",
                                      app="calltracking", appArgs=f"outbound,{call.channel_id}")
    await client.wait_event("StasisStart", channel["id"])
    status, _ = await client.request("POST", f"/channels/{channel['id']}/dial",
                                     caller=call.channel_id, timeout=timeout)
    assert status == 204
    return call.channel_id, channel["id"]


def dial_statuses(client: AriTestClient, channel_id: str) -> list[str]:
    return [event["dialstatus"] for event in client.events
            if event["type"] == "Dial" and event["peer"]["id"] == channel_id]


def event(client: AriTestClient, event_type: str, channel_id: str) -> dict[str, Any]:
    return next(e for e in client.events
                if e["type"] == event_type and e.get("channel", {}).get("id") == channel_id)


async def test_inbound_start_carries_dialplan_and_caller(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        call = await fake_asterisk.incoming_call("74951110001", caller_number="+79161234567",
                                                 caller_name="Ivan Petrov")
        start = await client.wait_event("StasisStart", call.channel_id)

    assert start["args"] == ["74951110001"]
    assert start["channel"]["state"] == "Ring"
    assert start["channel"]["caller"] == {"name": "Ivan Petrov", "number": "+79161234567"}
    assert start["channel"]["dialplan"] == {
        "context": "calltracking-inbound", "exten": "74951110001", "priority": 2,
        "app_name": "Stasis", "app_data": "calltracking,74951110001"}
    assert start["application"] == "calltracking"
    assert start["asterisk_id"]
    assert call.channel_id.split(".")[0].isdigit()


async def test_answered_line_event_sequence(fake_asterisk: FakeAsterisk) -> None:
    fake_asterisk.script_endpoint("PJSIP/office", Answer(after=0.02))
    async with ari_client(fake_asterisk) as client:
        _, outbound = await dial_office(fake_asterisk, client)
        await client.wait_event("ChannelStateChange", outbound)
        await fake_asterisk.wait_for(lambda: "ANSWER" in dial_statuses(client, outbound))

        assert client.types(outbound) == [
            "ChannelDialplan", "StasisStart", "ChannelConnectedLine", "Dial", "ChannelStateChange",
            "Dial", "ChannelStateChange", "Dial"]
        assert dial_statuses(client, outbound) == ["", "RINGING", "ANSWER"]
        assert event(client, "ChannelConnectedLine", outbound)["channel"]["connected"] == {
            "name": "Ivan", "number": "+79161234567"}


async def test_dial_events_carry_no_caller(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        _, outbound = await dial_office(fake_asterisk, client)
        await fake_asterisk.wait_for(lambda: "RINGING" in dial_statuses(client, outbound))

        dial = next(e for e in client.events if e["type"] == "Dial")

    assert "caller" not in dial
    assert dial["dialstring"] == "office"
    assert dial["forward"] == ""


async def test_busy_line_event_sequence(fake_asterisk: FakeAsterisk) -> None:
    fake_asterisk.script_endpoint("PJSIP/office", Busy(after=0.02, tech_cause=486))
    async with ari_client(fake_asterisk) as client:
        _, outbound = await dial_office(fake_asterisk, client)
        destroyed = await client.wait_event("ChannelDestroyed", outbound)

        assert client.types(outbound) == [
            "ChannelDialplan", "StasisStart", "ChannelConnectedLine", "Dial", "Dial",
            "ChannelHangupRequest", "StasisEnd", "ChannelDestroyed"]
        assert dial_statuses(client, outbound) == ["", "BUSY"]
        request = event(client, "ChannelHangupRequest", outbound)
        assert (request["cause"], request["tech_cause"]) == (17, 486)
        assert (destroyed["cause"], destroyed["cause_txt"]) == (17, "User busy")


async def test_congestion_failure_event_sequence(fake_asterisk: FakeAsterisk) -> None:
    fake_asterisk.script_endpoint("PJSIP/office", Fail(cause=34))
    async with ari_client(fake_asterisk) as client:
        _, outbound = await dial_office(fake_asterisk, client)
        destroyed = await client.wait_event("ChannelDestroyed", outbound)

        assert dial_statuses(client, outbound) == ["", "CONGESTION"]
        assert destroyed["cause"] == 34
        assert destroyed["cause_txt"] == "Circuit/channel congestion"


async def test_other_failure_sends_no_dial_status(fake_asterisk: FakeAsterisk) -> None:
    fake_asterisk.script_endpoint("PJSIP/office", Fail(cause=38))
    async with ari_client(fake_asterisk) as client:
        _, outbound = await dial_office(fake_asterisk, client)
        destroyed = await client.wait_event("ChannelDestroyed", outbound)

        assert dial_statuses(client, outbound) == [""]
        assert destroyed["cause"] == 38


async def test_dial_timeout_hangs_up_softly(fake_asterisk: FakeAsterisk) -> None:
    fake_asterisk.script_endpoint("PJSIP/office", NoAnswer())
    async with ari_client(fake_asterisk) as client:
        _, outbound = await dial_office(fake_asterisk, client, timeout=1)
        destroyed = await client.wait_event("ChannelDestroyed", outbound, timeout=5)

        assert dial_statuses(client, outbound) == ["", "RINGING"]
        request = event(client, "ChannelHangupRequest", outbound)
        assert (request["cause"], request["soft"]) == (32, True)
        assert destroyed["cause"] == 16


async def test_early_media_line_reports_progress(fake_asterisk: FakeAsterisk) -> None:
    fake_asterisk.script_endpoint("PJSIP/office", Answer(after=0.05, early_media=True))
    async with ari_client(fake_asterisk) as client:
        _, outbound = await dial_office(fake_asterisk, client)
        await fake_asterisk.wait_for(lambda: "ANSWER" in dial_statuses(client, outbound))

        assert dial_statuses(client, outbound) == ["", "PROGRESS", "ANSWER"]
        # A 183 leaves the channel Down, so its only state change is the answer.
        states = [e["channel"]["state"] for e in client.events
                  if e["type"] == "ChannelStateChange" and e["channel"]["id"] == outbound]
        assert states == ["Up"]


async def test_line_hangup_after_answer(fake_asterisk: FakeAsterisk) -> None:
    fake_asterisk.script_endpoint("PJSIP/office", Answer(after=0.02, hangup_after=0.05))
    async with ari_client(fake_asterisk) as client:
        _, outbound = await dial_office(fake_asterisk, client)
        destroyed = await client.wait_event("ChannelDestroyed", outbound)

        assert client.types(outbound)[-3:] == ["ChannelHangupRequest", "StasisEnd", "ChannelDestroyed"]
        assert event(client, "ChannelHangupRequest", outbound)["cause"] == 16
        assert destroyed["cause"] == 16


async def test_inbound_hangup_sends_no_destroyed(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        call = await fake_asterisk.incoming_call("74951110001", caller_number="+79161234567")
        _, bridge = await client.request("POST", "/bridges", type="mixing")
        await client.request("POST", f"/bridges/{bridge['id']}/addChannel", channel=call.channel_id)
        await client.wait_event("ChannelEnteredBridge", call.channel_id)

        await fake_asterisk.caller_hangs_up(call.channel_id, cause=16)
        await client.wait_event("StasisEnd", call.channel_id)

        assert client.types(call.channel_id) == [
            "StasisStart", "ChannelEnteredBridge", "ChannelHangupRequest", "ChannelLeftBridge",
            "StasisEnd"]
        assert call.ended


async def test_bridged_recording_finishes_when_bridge_empties(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        call = await fake_asterisk.incoming_call("74951110001", caller_number="+79161234567")
        _, bridge = await client.request("POST", "/bridges", type="mixing")
        await client.request("POST", f"/bridges/{bridge['id']}/addChannel", channel=call.channel_id)
        await client.request("POST", f"/bridges/{bridge['id']}/record", name="rec-1", format="wav")
        await client.wait_event("RecordingStarted", "rec-1")

        await fake_asterisk.caller_hangs_up(call.channel_id)
        finished = await client.wait_event("RecordingFinished", "rec-1")

        assert finished["recording"]["state"] == "done"
        assert finished["recording"]["duration"] == 0


async def test_bridge_destroy_sends_bridge_destroyed(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        call = await fake_asterisk.incoming_call("74951110001", caller_number="+79161234567")
        _, bridge = await client.request("POST", "/bridges", type="mixing")
        await client.request("POST", f"/bridges/{bridge['id']}/addChannel", channel=call.channel_id)
        await fake_asterisk.caller_hangs_up(call.channel_id)

        status, _ = await client.request("DELETE", f"/bridges/{bridge['id']}")
        destroyed = await client.wait_event("BridgeDestroyed", bridge["id"])

        assert status == 204
        assert destroyed["bridge"]["channels"] == []


async def test_stasis_without_websocket_falls_back(fake_asterisk: FakeAsterisk) -> None:
    call = await fake_asterisk.incoming_call("74951110001", caller_number="+79161234567")

    assert call.fell_back is not None
    assert call.fell_back["reason"] == "stasis-failed"
    assert call.fell_back["context"] == "calltracking-inbound"
    assert call.fell_back["extension"] == "74951110001"
    assert call.fell_back["variables"]["STASISSTATUS"] == "FAILED"
    assert fake_asterisk.undelivered_events == []


async def test_continue_records_dialplan_target(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        call = await fake_asterisk.incoming_call("74951110001", caller_number="+79161234567")
        await client.request("POST", f"/channels/{call.channel_id}/variable",
                             variable="CT_DESTINATION", value="PJSIP/office")

        status, _ = await client.request("POST", f"/channels/{call.channel_id}/continue",
                                         context="calltracking-fallback", extension="74951110001",
                                         priority=1)
        await client.wait_event("StasisEnd", call.channel_id)

    assert status == 204
    assert call.fell_back is not None
    assert call.fell_back["reason"] == "continue"
    assert (call.fell_back["context"], call.fell_back["extension"], call.fell_back["priority"]) == (
        "calltracking-fallback", "74951110001", 1)
    assert call.fell_back["variables"]["CT_DESTINATION"] == "PJSIP/office"
    assert fake_asterisk.channel_exists(call.channel_id)


async def test_websocket_drop_keeps_channels_in_stasis(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        call = await fake_asterisk.incoming_call("74951110001", caller_number="+79161234567")
        await client.wait_event("StasisStart", call.channel_id)

        await fake_asterisk.drop_websockets()

        assert fake_asterisk.websocket_count == 0
        assert await client.request("POST", f"/channels/{call.channel_id}/answer") == (204, None)


async def test_events_during_drop_are_not_replayed(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        call = await fake_asterisk.incoming_call("74951110001", caller_number="+79161234567")
        await client.wait_event("StasisStart", call.channel_id)
        await fake_asterisk.drop_websockets()
        await fake_asterisk.caller_hangs_up(call.channel_id)

    async with ari_client(fake_asterisk) as reconnected:
        _, application = await reconnected.request("GET", "/applications/calltracking")

        assert reconnected.events == []
        assert application["channel_ids"] == []
        assert [e["type"] for e in fake_asterisk.undelivered_events] == [
            "ChannelHangupRequest", "StasisEnd"]


async def test_websocket_refused_during_drop_window(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        await fake_asterisk.drop_websockets(refuse_for=30)

        status, body = await client.request("GET", "/events", app="calltracking")

    assert status == 503
    assert body == {"message": "Service Unavailable"}


async def test_local_originate_enters_inbound_context(fake_asterisk: FakeAsterisk) -> None:
    async with ari_client(fake_asterisk) as client:
        status, first_half = await client.request(
            "POST", "/channels", endpoint="Local/74951110001@calltracking-inbound",
            context="calltracking-qa", extension="caller", callerId='"QA" <+79161234567>')
        await fake_asterisk.wait_for(lambda: len(fake_asterisk.calls) == 1)
        call = fake_asterisk.calls[0]
        start = await client.wait_event("StasisStart", call.channel_id)

    assert status == 200
    assert first_half["name"].endswith(";1")
    assert start["channel"]["name"].endswith(";2")
    assert start["args"] == ["74951110001"]
    assert start["channel"]["caller"] == {"name": "QA", "number": "+79161234567"}
