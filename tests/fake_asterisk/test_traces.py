"""Replays of the recorded Asterisk 22.10 transcripts against the fake.

Each transcript's REST calls are sent to the fake in their recorded order, and its far-end
actions (a SIP caller's BYE or CANCEL, a company line's answer and hangup) are played through
the control API. The fake must then send, for every channel, bridge and recording, the same
sequence of event types as the transcript, and answer every REST call with the same status.

Differences allowed, with their reasons:
- ChannelVarset events are ignored: the fake sets only STASISSTATUS, not BRIDGEPEER or the
  RTP statistics variables.
- The transcripts' application dialed the created channel before its StasisStart arrived and
  got 204 because Asterisk had already started it; the replay waits for StasisStart first,
  since the fake answers 409 in that window on purpose.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from .helpers import AriTestClient, ari_client, subject_of
from .scripts import Answer, LineBehaviour, NoAnswer
from .server import FakeAsterisk

# Transcripts of real calls through Asterisk 22.10.1, kept unchanged beside the tests so that
# every checkout replays them.
TRACES = Path(__file__).resolve().parent / "traces"

# The company line each transcript dialed and what it did. The lines that hang up wait long
# enough for the replayed answer, addChannel and record requests to come first, as recorded.
LINES: dict[str, tuple[str, LineBehaviour]] = {
    "answered_caller_hangs.json": ("Local/100@company-line", Answer(after=0.05)),
    "answered_callee_hangs.json": ("Local/100@company-line", Answer(after=0.05, hangup_after=0.5)),
    "abandoned_ringing.json": ("Local/noanswer@company-line", NoAnswer()),
    "sip_answered.json": ("PJSIP/office", Answer(after=0.02)),
    "sip_abandoned_ringing.json": ("PJSIP/office-noanswer", NoAnswer()),
    "sip_company_hangs_up.json": ("PJSIP/office-hangs", Answer(after=0.05, hangup_after=0.5)),
}

IGNORED_EVENT_TYPES = {"ChannelVarset"}


def load_trace(name: str) -> list[dict[str, Any]]:
    return json.loads((TRACES / name).read_text(encoding="utf-8"))


class Replay:
    """Plays one transcript against the fake and maps the transcript's ids to the fake's."""

    def __init__(self, fake: FakeAsterisk, client: AriTestClient, trace: list[dict[str, Any]]) -> None:
        self.fake = fake
        self.client = client
        self.trace = trace
        self.ids: dict[str, str] = {}
        self.statuses: list[tuple[str, int, int]] = []

    def to_fake(self, text: str) -> str:
        for trace_id in sorted(self.ids, key=len, reverse=True):
            text = re.sub(rf"(?<![\w.]){re.escape(trace_id)}(?![\w.])", self.ids[trace_id], text)
        return text

    async def run(self) -> None:
        first = self.trace[0]
        if first.get("type") == "StasisStart":
            channel = first["channel"]
            call = await self.fake.incoming_call(
                first["args"][0], caller_number=channel["caller"]["number"],
                caller_name=channel["caller"]["name"], context=channel["dialplan"]["context"])
            self.ids[channel["id"]] = call.channel_id

        for index, element in enumerate(self.trace):
            if "rest" in element:
                await self.wait_for_events_before(index)
                await self.send(element)
            elif self.is_far_end_hangup_of_caller(element):
                await self.wait_for_events_before(index)
                await self.fake.caller_hangs_up(self.ids[element["channel"]["id"]],
                                                cause=element.get("cause"),
                                                tech_cause=element.get("tech_cause"))
            elif element["type"] == "StasisStart" and element["channel"]["id"] not in self.ids:
                await self.map_stasis_start(element)

    def is_far_end_hangup_of_caller(self, element: dict[str, Any]) -> bool:
        # A SIP caller's BYE or CANCEL has no REST call behind it. A Local caller hangs up
        # because the transcript's application deleted the ;1 half, and that is replayed as REST.
        return (element.get("type") == "ChannelHangupRequest" and not element.get("soft")
                and element["channel"]["name"].startswith("PJSIP/trunk"))

    async def map_stasis_start(self, element: dict[str, Any]) -> None:
        args = [self.to_fake(arg) for arg in element["args"]]

        def fake_start() -> dict[str, Any] | None:
            for event in self.client.events:
                if (event["type"] == "StasisStart" and event["args"] == args
                        and event["channel"]["id"] not in self.ids.values()):
                    return event
            return None

        await self.fake.wait_for(lambda: fake_start() is not None)
        self.ids[element["channel"]["id"]] = fake_start()["channel"]["id"]  # type: ignore[index]

    async def wait_for_events_before(self, index: int) -> None:
        """Wait until the fake has sent the last event that precedes trace element `index`."""
        previous = [element for element in self.trace[:index]
                    if "type" in element and element["type"] not in IGNORED_EVENT_TYPES]
        if not previous:
            return
        last = previous[-1]
        subject = subject_of(last) or ""
        subject_in_fake = self.fake_subject(subject)
        expected = sum(1 for element in previous
                       if element["type"] == last["type"] and subject_of(element) == subject)
        await self.fake.wait_for(
            lambda: sum(1 for event in self.client.events
                        if event["type"] == last["type"] and subject_of(event) == subject_in_fake)
            >= expected)

    async def send(self, element: dict[str, Any]) -> None:
        method, path = element["rest"].split(" ", 1)
        params = {key: self.to_fake(str(value)) for key, value in element["params"].items()}
        fake_path = self.to_fake(path)
        if fake_path.endswith("/dial"):
            await self.client.wait_event("StasisStart", fake_path.split("/")[2])
        status, body = await self.client.request(method, fake_path, **params)
        self.statuses.append((element["rest"], element["status"], status))
        if isinstance(body, dict) and isinstance(element["body"], dict) and "id" in body:
            self.ids.setdefault(element["body"]["id"], body["id"])

    def expected_types(self) -> dict[str, list[str]]:
        sequences: dict[str, list[str]] = {}
        for element in self.trace:
            if "type" in element and element["type"] not in IGNORED_EVENT_TYPES:
                sequences.setdefault(subject_of(element) or "", []).append(element["type"])
        return sequences

    async def wait_until_complete(self) -> None:
        expected = self.expected_types()
        await self.fake.wait_for(lambda: all(
            len(self.client.types(self.fake_subject(subject))) >= len(types)
            for subject, types in expected.items()))

    def fake_subject(self, subject: str) -> str:
        return self.ids.get(subject) or self.to_fake(subject)


@pytest.mark.parametrize("trace_name", sorted(LINES))
async def test_transcript_event_types_match(fake_asterisk: FakeAsterisk, trace_name: str) -> None:
    trace = load_trace(trace_name)
    endpoint, behaviour = LINES[trace_name]
    fake_asterisk.script_endpoint(endpoint, behaviour)

    async with ari_client(fake_asterisk) as client:
        replay = Replay(fake_asterisk, client, trace)
        await replay.run()
        await replay.wait_until_complete()

        for subject, types in replay.expected_types().items():
            assert client.types(replay.fake_subject(subject)) == types, f"events about {subject}"


@pytest.mark.parametrize("trace_name", sorted(LINES))
async def test_transcript_rest_statuses_match(fake_asterisk: FakeAsterisk, trace_name: str) -> None:
    trace = load_trace(trace_name)
    endpoint, behaviour = LINES[trace_name]
    fake_asterisk.script_endpoint(endpoint, behaviour)

    async with ari_client(fake_asterisk) as client:
        replay = Replay(fake_asterisk, client, trace)
        await replay.run()

    for rest, recorded, answered in replay.statuses:
        assert answered == recorded, rest
