"""The telephony core of the fake Asterisk: channel, bridge and recording life cycles and the
ARI events each step sends.

Event sequences follow transcripts of Asterisk 22.10 and its sources (res/ari/resource_*.c,
res/stasis/control.c, main/bridge_channel.c). Every method here is synchronous; the REST layer
and the control API call them and the websocket layer delivers what `emit` sends.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from .channels import (
    SOFTHANGUP_EXPLICIT,
    Bridge,
    Channel,
    IdSource,
    LiveRecording,
    Party,
    ari_timestamp,
    cause_text,
    sip_protocol_id,
    trunk_protocol_id,
)
from .scripts import Answer, Busy, Fail, LineBehaviour, NoAnswer

logger = logging.getLogger("pbx_bridge.tests.fake_asterisk")

ASTERISK_ID = "02:fc:00:00:00:01"


@dataclass
class Call:
    """An inbound call placed through the control API or a Local originate into an inbound context."""

    channel_id: str
    dialed: str
    caller_number: str
    caller_name: str
    # Where the channel went when it left Stasis by `continue`, or when Stasis() failed because
    # no websocket was attached: {"reason", "context", "extension", "priority", "label",
    # "variables"}. None while the call stayed with the application.
    fell_back: dict[str, Any] | None = None
    ended: bool = False
    hangup_cause: int | None = None
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None


class Pbx:
    """Channels, bridges and recordings, and the events their changes send to applications."""

    def __init__(
        self,
        send: Callable[[str, dict[str, Any]], None],
        has_websocket: Callable[[str], bool],
        *,
        dialplan_app: str,
        stasis_entry_delay: float,
        default_line: LineBehaviour,
        inbound_contexts: frozenset[str],
    ) -> None:
        self._send = send
        # Application that Stasis() of the inbound contexts names (Stasis(<app>,${EXTEN})).
        self.dialplan_app = dialplan_app
        self._has_websocket = has_websocket
        self.stasis_entry_delay = stasis_entry_delay
        self.default_line = default_line
        self.inbound_contexts = inbound_contexts
        self.ids = IdSource()
        self.channels: dict[str, Channel] = {}
        self.bridges: dict[str, Bridge] = {}
        self.live_recordings: dict[str, LiveRecording] = {}
        self.stored_recordings: dict[str, str] = {}
        self.scripts: dict[str, LineBehaviour] = {}
        self.calls: list[Call] = []
        self.fallbacks: list[dict[str, Any]] = []
        self.subscribe_all_apps: set[str] = set()
        self._calls_by_channel: dict[str, Call] = {}
        self._pending: list[Callable[[], None]] | None = None

    # Event delivery

    @contextmanager
    def deferring(self) -> Iterator[list[Callable[[], None]]]:
        """Hold back events and follow-up actions of a REST request until its answer is sent.

        Asterisk sends the events of a request after the HTTP answer (the transcripts show the
        REST answer first), so the REST layer flushes the returned list once the answer is written.
        """
        self._pending = []
        try:
            yield self._pending
        finally:
            self._pending = None

    def after_response(self, action: Callable[[], None]) -> None:
        """Run `action` after the current REST answer is sent, or now outside a request."""
        if self._pending is not None:
            self._pending.append(action)
        else:
            action()

    def emit(self, apps: set[str], event_type: str, **fields: Any) -> None:
        for app in sorted(apps | self.subscribe_all_apps):
            event = {"type": event_type, "timestamp": ari_timestamp(), **fields,
                     "asterisk_id": ASTERISK_ID, "application": app}
            self.after_response(lambda app=app, event=event: self._send(app, event))

    def channel_apps(self, channel: Channel) -> set[str]:
        apps = set(channel.subscribed_apps)
        if channel.stasis_app is not None:
            apps.add(channel.stasis_app)
        return apps

    def emit_channel(self, channel: Channel, event_type: str, **fields: Any) -> None:
        self.emit(self.channel_apps(channel), event_type, **fields, channel=channel.to_json())

    # Creating channels

    def new_channel(self, endpoint: str, *, state: str, channel_id: str | None = None,
                    local_half: str | None = None) -> Channel:
        suffix = self.ids.name_suffix()
        technology = endpoint.split("/", 1)[0]
        if technology == "Local":
            name = f"{endpoint}-{suffix};{local_half or '1'}"
            protocol_id = ""
        elif technology == "PJSIP":
            name = f"{endpoint.split('@', 1)[0]}-{suffix}"
            protocol_id = sip_protocol_id()
        else:
            name = f"{endpoint}-{suffix}"
            protocol_id = ""
        channel = Channel(id=channel_id or self.ids.channel_id(), name=name, endpoint=endpoint,
                          state=state, protocol_id=protocol_id)
        self.channels[channel.id] = channel
        return channel

    def place_inbound_call(self, app: str, dialed: str, *, caller: Party, endpoint: str,
                           context: str, stasis_args: list[str] | None = None,
                           channel: Channel | None = None, channel_id: str | None = None) -> Call:
        """Run `Stasis(app, dialed)` for a new inbound channel, or the dialplan fallback if it fails."""
        if channel is None:
            channel = self.new_channel(endpoint, state="Ring", channel_id=channel_id)
            channel.protocol_id = trunk_protocol_id() if endpoint.startswith("PJSIP/") else ""
            channel.caller = caller
        channel.context, channel.exten, channel.priority = context, dialed, 2
        channel.app_name, channel.app_data = "Stasis", f"{app},{dialed}"
        call = Call(channel_id=channel.id, dialed=dialed, caller_number=caller.number,
                    caller_name=caller.name)
        self.calls.append(call)
        self._calls_by_channel[channel.id] = call

        if not self._has_websocket(app):
            # Stasis() fails at once without a websocket: STASISSTATUS=FAILED and the
            # dialplan goes on with the next priority.
            channel.variables["STASISSTATUS"] = "FAILED"
            channel.priority, channel.app_name, channel.app_data = 3, "", ""
            self._record_fallback(call, "stasis-failed", channel, context, dialed, 3, None)
            return call

        channel.stasis_app = app
        args = stasis_args if stasis_args is not None else [dialed]
        self.emit_channel(channel, "StasisStart", args=args)
        return call

    def create_channel(self, endpoint: str, app: str, app_args: str | None, *,
                       channel_id: str | None, other_channel_id: str | None,
                       originator: Channel | None, variables: dict[str, str]) -> Channel:
        """Create a channel for `channels/create`; it enters Stasis after the REST answer."""
        channel = self.new_channel(endpoint, state="Down", channel_id=channel_id)
        channel.created_by_ari = True
        channel.dialstring = endpoint.split("/", 1)[1]
        channel.subscribed_apps.add(app)
        channel.variables.update(variables)
        self._set_dialplan_of_endpoint(channel)
        if originator is not None:
            originator.subscribed_apps.add(app)

        stasis_data = app if not app_args else f"{app},{app_args}"
        args = app_args.split(",") if app_args else []

        def enter_stasis() -> None:
            if channel.gone:
                return
            self._enter_stasis_of_created(channel, app, stasis_data, args)

        def schedule() -> None:
            if self.stasis_entry_delay > 0:
                channel.timers.append(asyncio.get_running_loop().call_later(
                    self.stasis_entry_delay, enter_stasis))
            else:
                enter_stasis()

        self.after_response(schedule)
        return channel

    def _set_dialplan_of_endpoint(self, channel: Channel) -> None:
        resource = channel.endpoint.split("/", 1)[1]
        if channel.technology == "Local" and "@" in resource:
            channel.exten, channel.context = resource.split("@", 1)
        else:
            channel.context, channel.exten = "default", "s"

    def _enter_stasis_of_created(self, channel: Channel, app: str, stasis_data: str,
                                 args: list[str]) -> None:
        channel.app_name, channel.app_data = "Stasis", stasis_data
        self.emit_channel(channel, "ChannelDialplan", dialplan_app="Stasis",
                          dialplan_app_data=stasis_data)
        self._set_variable(channel, "STASISSTATUS", "")
        if not self._has_websocket(app):
            self._set_variable(channel, "STASISSTATUS", "FAILED")
            self._destroy(channel)
            return
        channel.stasis_app = app
        self.emit_channel(channel, "StasisStart", args=args)

    def originate(self, endpoint: str, *, app: str | None, app_args: str | None,
                  context: str | None, extension: str | None, priority: int, label: str | None,
                  caller_id: tuple[str, str], timeout: int, channel_id: str | None,
                  other_channel_id: str | None, variables: dict[str, str]) -> Channel:
        """Originate a call for `POST /channels`: a Local pair into the dialplan, or a dialed line."""
        name, number = caller_id
        resource = endpoint.split("/", 1)[1]
        first = self.new_channel(endpoint, state="Down", channel_id=channel_id)
        first.caller = Party(name, number)
        first.connected = Party(name, number)
        first.variables.update(variables)
        if app:
            first.subscribed_apps.add(app)
        if first.technology == "Local" and "@" in resource:
            exten, local_context = resource.split("@", 1)
            first.context, first.exten, first.priority = local_context, exten, 1
            first.app_name, first.app_data = "AppDial2", "(Outgoing Line)"
            # NOTE: the ;1 half stays where Asterisk parks it while the ;2 half runs the
            # dialplan: `app`, `context`, `extension` and `label` of a Local originate are
            # accepted but the ;1 half never enters Stasis or runs its target in the fake.
            self.after_response(lambda: self._start_local_pair(first, other_channel_id))
            return first

        first.dialstring = resource
        self.after_response(lambda: self._dial_originated(first, app, app_args, timeout))
        return first

    def _start_local_pair(self, first: Channel, other_channel_id: str | None) -> None:
        exten, local_context = first.endpoint.split("/", 1)[1].split("@", 1)
        second = Channel(
            id=other_channel_id or self.ids.channel_id(), name=first.name[:-1] + "2",
            endpoint=first.endpoint, state="Ring", caller=Party(first.caller.name, first.caller.number),
            connected=Party(first.connected.name, first.connected.number))
        self.channels[second.id] = second
        first.local_peer, second.local_peer = second, first
        if local_context in self.inbound_contexts:
            self.place_inbound_call(self.dialplan_app, exten, caller=second.caller,
                                    endpoint=first.endpoint, context=local_context,
                                    channel=second)
        else:
            second.context, second.exten, second.priority = local_context, exten, 1

    def _dial_originated(self, channel: Channel, app: str | None, app_args: str | None,
                         timeout: int) -> None:
        behaviour = self.scripts.get(channel.endpoint, self.default_line)
        if isinstance(behaviour, Answer):
            def answered() -> None:
                if channel.gone:
                    return
                channel.state = "Up"
                if app and self._has_websocket(app):
                    channel.app_name = "Stasis"
                    channel.app_data = app if not app_args else f"{app},{app_args}"
                    channel.stasis_app = app
                    self.emit_channel(channel, "StasisStart",
                                      args=app_args.split(",") if app_args else [])
                self._schedule_line_hangup(channel, behaviour)
            channel.timers.append(asyncio.get_running_loop().call_later(behaviour.after, answered))
            return
        cause = {Busy: 17, NoAnswer: 19}.get(type(behaviour), getattr(behaviour, "cause", 34))
        delay = timeout if isinstance(behaviour, NoAnswer) else getattr(behaviour, "after", 0.02)
        channel.hangup_cause = cause
        channel.timers.append(asyncio.get_running_loop().call_later(
            delay, lambda: self._destroy(channel)))

    # Dialing a created channel

    def dial(self, channel: Channel, caller: Channel | None, timeout: int) -> None:
        """Dial a channel made by `channels/create`; the line follows its script."""
        behaviour = self.scripts.get(channel.endpoint, self.default_line)
        if caller is not None:
            channel.connected = Party(caller.caller.name, caller.caller.number)
            channel.variables.update(caller.variables)
            self.emit_channel(channel, "ChannelConnectedLine")
        self._emit_dial(channel, "")
        loop = asyncio.get_running_loop()

        if isinstance(behaviour, (Answer, NoAnswer)) and behaviour.early_media:
            # chan_pjsip turns a 183 into a PROGRESS indication and leaves the channel's state
            # as it is. main/bridge_channel.c publishes the indication as Dial PROGRESS.
            self._emit_dial(channel, "PROGRESS")
        elif isinstance(behaviour, (Answer, NoAnswer)):
            self._set_state(channel, "Ringing")
            self._emit_dial(channel, "RINGING")
        if isinstance(behaviour, Answer):
            channel.timers.append(loop.call_later(behaviour.after, self._line_answers, channel,
                                                  behaviour))
        elif isinstance(behaviour, Busy):
            channel.timers.append(loop.call_later(behaviour.after, self._line_fails, channel,
                                                  "BUSY", 17, behaviour.tech_cause))
        elif isinstance(behaviour, Fail):
            status = "CONGESTION" if behaviour.cause == 34 else None
            channel.timers.append(loop.call_later(behaviour.after, self._line_fails, channel,
                                                  status, behaviour.cause, behaviour.tech_cause))
        if timeout > 0:
            channel.dial_timer = loop.call_later(timeout, self._dial_timed_out, channel)

    def _emit_dial(self, channel: Channel, status: str) -> None:
        self.emit(self.channel_apps(channel), "Dial", dialstatus=status, forward="",
                  dialstring=channel.dialstring or "", peer=channel.to_json())

    def _line_answers(self, channel: Channel, behaviour: Answer) -> None:
        if channel.gone:
            return
        if channel.dial_timer is not None:
            channel.dial_timer.cancel()
            channel.dial_timer = None
        self._set_state(channel, "Up")
        self._emit_dial(channel, "ANSWER")
        self._schedule_line_hangup(channel, behaviour)

    def _schedule_line_hangup(self, channel: Channel, behaviour: Answer) -> None:
        if behaviour.hangup_after is None:
            return
        channel.timers.append(asyncio.get_running_loop().call_later(
            behaviour.hangup_after, self.far_end_hangup, channel, behaviour.hangup_cause, None))

    def _line_fails(self, channel: Channel, status: str | None, cause: int,
                    tech_cause: int | None) -> None:
        if channel.gone:
            return
        if status is not None:
            self._emit_dial(channel, status)
        self.far_end_hangup(channel, cause, tech_cause)

    def _dial_timed_out(self, channel: Channel) -> None:
        # res/stasis/control.c bridge_timeout(): an unanswered dialed channel is hung up softly
        # when the dial timeout passes. No Dial NOANSWER is published on this path.
        channel.dial_timer = None
        if channel.gone or channel.state == "Up":
            return
        self.soft_hangup(channel, cause=0)

    # Channel operations

    def _set_state(self, channel: Channel, state: str) -> None:
        if channel.state == state:
            return
        channel.state = state
        self.emit_channel(channel, "ChannelStateChange")

    def _set_variable(self, channel: Channel, name: str, value: str) -> None:
        channel.variables[name] = value
        self.emit_channel(channel, "ChannelVarset", variable=name, value=value)

    def answer(self, channel: Channel) -> None:
        self._set_state(channel, "Up")

    def set_variable(self, channel: Channel, name: str, value: str) -> None:
        self._set_variable(channel, name, value)

    def continue_in_dialplan(self, channel: Channel, context: str, extension: str, priority: int,
                             label: str | None) -> None:
        """Let a channel leave Stasis for the dialplan; channels/create channels are hung up."""
        if channel.bridge_id is not None:
            self._leave_bridge(channel)
        self._end_stasis(channel)
        channel.context, channel.exten, channel.priority = context, extension, priority
        channel.app_name, channel.app_data = "", ""
        call = self._calls_by_channel.get(channel.id)
        if call is not None:
            self._record_fallback(call, "continue", channel, context, extension, priority, label)
        if channel.created_by_ari:
            # The thread that ran Stasis() for channels/create hangs the channel up once
            # Stasis() returns.
            self._destroy(channel)

    def soft_hangup(self, channel: Channel, cause: int) -> None:
        """Hang a channel up from inside Asterisk (REST DELETE or dial timeout)."""
        if cause:
            channel.hangup_cause = cause
        self._hang_up(channel, {"cause": SOFTHANGUP_EXPLICIT, "soft": True})

    def far_end_hangup(self, channel: Channel, cause: int | None, tech_cause: int | None) -> None:
        """Hang a channel up from its far end (BYE, CANCEL, the other Local half)."""
        if channel.gone:
            return
        fields: dict[str, Any] = {}
        if cause is not None:
            fields["cause"] = cause
            channel.hangup_cause = cause
        if tech_cause is not None:
            fields["tech_cause"] = tech_cause
        self._hang_up(channel, fields)

    def _hang_up(self, channel: Channel, request_fields: dict[str, Any]) -> None:
        if channel.gone:
            return
        channel.cancel_timers()
        self.emit_channel(channel, "ChannelHangupRequest", **request_fields)
        if channel.bridge_id is not None:
            self._leave_bridge(channel)
        self._end_stasis(channel)
        self._destroy(channel)

    def _end_stasis(self, channel: Channel) -> None:
        if channel.stasis_app is None:
            return
        self.emit_channel(channel, "StasisEnd")
        channel.stasis_app = None
        if channel.created_by_ari:
            self._set_variable(channel, "STASISSTATUS", "SUCCESS")

    def _destroy(self, channel: Channel) -> None:
        """Destroy a channel; only applications subscribed to it hear of it (ChannelDestroyed)."""
        if channel.gone:
            return
        channel.cancel_timers()
        if channel.bridge_id is not None:
            self._leave_bridge(channel)
        channel.gone = True
        cause = channel.hangup_cause or 16
        channel.app_name, channel.app_data = "", ""
        if channel.subscribed_apps:
            self.emit(set(channel.subscribed_apps), "ChannelDestroyed", cause=cause,
                      cause_txt=cause_text(cause), channel=channel.to_json())
        del self.channels[channel.id]

        call = self._calls_by_channel.get(channel.id)
        if call is not None:
            call.ended, call.hangup_cause, call.ended_at = True, cause, time.time()

        peer = channel.local_peer
        if peer is not None and not peer.gone:
            # Hanging up one half of a Local channel hangs up the other from its far end.
            self.far_end_hangup(peer, 16, None)

    # Bridges

    def create_bridge(self, bridge_id: str | None, name: str, bridge_type: str) -> Bridge:
        bridge = Bridge(id=bridge_id or str(uuid.uuid4()), name=name, bridge_type=bridge_type)
        self.bridges[bridge.id] = bridge
        return bridge

    def add_to_bridge(self, bridge: Bridge, channel: Channel, *, inhibit_connected_line: bool) -> None:
        if channel.bridge_id == bridge.id:
            return
        if channel.bridge_id is not None:
            self._leave_bridge(channel)
        channel.inhibit_connected_line = inhibit_connected_line
        channel.bridge_id = bridge.id
        bridge.channel_ids.append(channel.id)
        if channel.stasis_app is not None:
            bridge.apps.add(channel.stasis_app)
        self.emit(self.channel_apps(channel) | bridge.apps, "ChannelEnteredBridge",
                  bridge=bridge.to_json(), channel=channel.to_json())
        self._update_connected_lines(bridge)

    def remove_from_bridge(self, channel: Channel) -> None:
        self._leave_bridge(channel)

    def _leave_bridge(self, channel: Channel) -> None:
        bridge = self.bridges.get(channel.bridge_id or "")
        channel.bridge_id = None
        if bridge is None or channel.id not in bridge.channel_ids:
            return
        bridge.channel_ids.remove(channel.id)
        self.emit(self.channel_apps(channel) | bridge.apps, "ChannelLeftBridge",
                  bridge=bridge.to_json(), channel=channel.to_json())
        if not bridge.channel_ids and bridge.recording is not None:
            # The recorder is a "lonely" bridge member: it leaves when the last channel does.
            self.finish_recording(bridge.recording)
        self._update_connected_lines(bridge)

    def _update_connected_lines(self, bridge: Bridge) -> None:
        # In a two-party bridge each channel's connected line becomes the other party's caller
        # id. The recorder counts as a party with an empty caller id.
        parties: list[Channel | None] = [self.channels[i] for i in bridge.channel_ids]
        if bridge.recording is not None and bridge.recording.state == "recording":
            parties.append(None)
        if len(parties) != 2:
            return
        for this, other in ((parties[0], parties[1]), (parties[1], parties[0])):
            if this is None or this.inhibit_connected_line:
                continue
            identity = Party() if other is None else Party(other.caller.name, other.caller.number)
            if this.connected != identity:
                this.connected = identity
                self.emit_channel(this, "ChannelConnectedLine")

    def destroy_bridge(self, bridge: Bridge) -> None:
        for channel_id in list(bridge.channel_ids):
            self._leave_bridge(self.channels[channel_id])
        if bridge.recording is not None:
            self.finish_recording(bridge.recording)
        del self.bridges[bridge.id]
        self.emit(set(bridge.apps), "BridgeDestroyed", bridge=bridge.to_json())

    # Recordings

    def start_recording(self, bridge: Bridge, name: str, recording_format: str,
                        max_duration: int) -> LiveRecording:
        recording = LiveRecording(name=name, format=recording_format,
                                  target_uri=f"bridge:{bridge.id}", bridge_id=bridge.id)
        self.live_recordings[name] = recording
        bridge.recording = recording

        def recorder_joins() -> None:
            if recording.state != "queued":
                return
            recording.state = "recording"
            recording.started_at = time.time()
            self.emit(set(bridge.apps), "RecordingStarted", recording=recording.to_json())
            self._update_connected_lines(bridge)
            if not bridge.channel_ids:
                self.finish_recording(recording)
            elif max_duration > 0:
                recording.max_duration_timer = asyncio.get_running_loop().call_later(
                    max_duration, self.finish_recording, recording)

        self.after_response(recorder_joins)
        return recording

    def finish_recording(self, recording: LiveRecording) -> None:
        if recording.state in ("done", "failed"):
            return
        if recording.max_duration_timer is not None:
            recording.max_duration_timer.cancel()
        started = recording.started_at or time.time()
        # Asterisk rounds the recorded time to whole seconds (3.99 s is reported as 4).
        recording.duration = int(time.time() - started + 0.5)
        recording.state = "done"
        self.live_recordings.pop(recording.name, None)
        self.stored_recordings[recording.name] = recording.format
        bridge = self.bridges.get(recording.bridge_id)
        apps: set[str] = set()
        if bridge is not None:
            apps = set(bridge.apps)
            bridge.recording = None
        self.emit(apps, "RecordingFinished", recording=recording.to_json())
        if bridge is not None:
            self._update_connected_lines(bridge)

    # Bookkeeping for the control API

    def _record_fallback(self, call: Call, reason: str, channel: Channel, context: str,
                         extension: str, priority: int, label: str | None) -> None:
        call.fell_back = {
            "reason": reason,
            "channel_id": channel.id,
            "context": context,
            "extension": extension,
            "priority": priority,
            "label": label,
            "variables": dict(channel.variables),
        }
        self.fallbacks.append(call.fell_back)
        logger.debug("channel %s left for the dialplan (%s) at %s,%s,%s", channel.id, reason,
                     context, extension, priority)

    def call_of(self, channel_id: str) -> Call | None:
        return self._calls_by_channel.get(channel_id)
