"""Channels, bridges and recordings of the fake Asterisk, and their ARI JSON shapes.

The JSON shapes follow the models of the Asterisk 22 ARI specification (Channel, Bridge,
LiveRecording, StoredRecording) and the objects seen in transcripts of Asterisk 22.10.
"""

from __future__ import annotations

import itertools
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

# Hangup cause texts of Asterisk's main/causes.c (ast_cause2str), for the causes a call-tracking
# flow meets. ChannelDestroyed carries them as `cause_txt`.
CAUSE_TEXTS = {
    0: "Unknown",
    1: "Unallocated (unassigned) number",
    3: "No route to destination",
    16: "Normal Clearing",
    17: "User busy",
    18: "No user responding",
    19: "User alerting, no answer",
    20: "Subscriber absent",
    21: "Call Rejected",
    26: "Answered elsewhere",
    27: "Destination out of order",
    28: "Invalid number format",
    31: "Normal, unspecified",
    34: "Circuit/channel congestion",
    38: "Network out of order",
    41: "Temporary failure",
    42: "Switching equipment congestion",
    58: "Bearer capability not available",
    127: "Interworking, unspecified",
}

# `reason` values of DELETE /channels/{channelId} and the causes Asterisk 22 maps them to
# (convert_reason_to_hangup_code in res/ari/resource_channels.c).
HANGUP_REASONS = {
    "normal": 16,
    "busy": 17,
    "congestion": 34,
    "no_answer": 19,
    "timeout": 18,
    "rejected": 21,
    "unallocated": 1,
    "normal_unspecified": 31,
    "number_incomplete": 28,
    "codec_mismatch": 58,
    "interworking": 127,
    "failure": 38,
    "answered_elsewhere": 26,
}

# ChannelHangupRequest of a soft hangup (REST DELETE, dial timeout) carries the soft-hangup flag
# AST_SOFTHANGUP_EXPLICIT as its `cause`, as the transcripts show.
SOFTHANGUP_EXPLICIT = 0x20

# File extensions of the formats a stock Asterisk 22 can record to.
RECORDING_FORMATS = frozenset(
    {"wav", "WAV", "wav16", "gsm", "ulaw", "ul", "alaw", "al", "g722", "g729", "g726", "g723",
     "sln", "sln16", "raw", "ogg", "h263", "h264", "siren7", "siren14", "vox"}
)


def cause_text(cause: int) -> str:
    """Return Asterisk's text for a hangup cause, "Unknown" for causes it has none for."""
    return CAUSE_TEXTS.get(cause, "Unknown")


def ari_timestamp(moment: float | None = None) -> str:
    """Format a Unix time as ARI does: `2026-12-04T19:25:00.105+0000` (UTC, milliseconds)."""
    when = datetime.fromtimestamp(time.time() if moment is None else moment, tz=timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}+0000"


class IdSource:
    """Channel ids (`<unix time>.<counter>`) and channel name suffixes, as Asterisk assigns them."""

    def __init__(self) -> None:
        self._uniqueids = itertools.count(1)
        self._name_sequence = itertools.count(0)

    def channel_id(self) -> str:
        return f"{int(time.time())}.{next(self._uniqueids)}"

    def name_suffix(self) -> str:
        """Return the 8-digit hex sequence Asterisk appends to every channel name."""
        return f"{next(self._name_sequence):08x}"


@dataclass
class Party:
    """Caller id of a channel (the ARI CallerID model)."""

    name: str = ""
    number: str = ""

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "number": self.number}


@dataclass
class Channel:
    """One Asterisk channel: an inbound call leg, a leg created by the application, or a Local half."""

    id: str
    name: str
    endpoint: str
    state: str
    caller: Party = field(default_factory=Party)
    connected: Party = field(default_factory=Party)
    protocol_id: str = ""
    context: str = "default"
    exten: str = "s"
    priority: int = 1
    app_name: str = ""
    app_data: str = ""
    created_at: float = field(default_factory=time.time)
    variables: dict[str, str] = field(default_factory=dict)
    # Name of the Stasis application the channel is in, None while it is not in Stasis.
    stasis_app: str | None = None
    # Applications subscribed to the channel for its whole life (channels/create, originate
    # with app, originator): they also get its events after StasisEnd, ChannelDestroyed included.
    subscribed_apps: set[str] = field(default_factory=set)
    # Dial string saved by channels/create; only such channels can be dialed.
    dialstring: str | None = None
    created_by_ari: bool = False
    bridge_id: str | None = None
    inhibit_connected_line: bool = False
    hangup_cause: int = 0
    # The other half of a Local channel pair.
    local_peer: Channel | None = None
    dial_timer: Any = None
    timers: list[Any] = field(default_factory=list)
    gone: bool = False

    @property
    def technology(self) -> str:
        return self.endpoint.split("/", 1)[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "protocol_id": self.protocol_id,
            "caller": self.caller.to_json(),
            "connected": self.connected.to_json(),
            "accountcode": "",
            "dialplan": {
                "context": self.context,
                "exten": self.exten,
                "priority": self.priority,
                "app_name": self.app_name,
                "app_data": self.app_data,
            },
            "creationtime": ari_timestamp(self.created_at),
            "language": "en",
        }

    def cancel_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()
        if self.dial_timer is not None:
            self.dial_timer.cancel()
            self.dial_timer = None


def sip_protocol_id() -> str:
    """Return a SIP Call-ID like the ones PJSIP channels carry as `protocol_id`."""
    return str(uuid.uuid4())


def trunk_protocol_id() -> str:
    return f"1-{secrets.randbelow(90000) + 10000}@127.0.0.1"


@dataclass
class LiveRecording:
    """A recording of a bridge, from the REST request until it is finished."""

    name: str
    format: str
    target_uri: str
    bridge_id: str
    state: str = "queued"
    started_at: float | None = None
    duration: int | None = None
    max_duration_timer: Any = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "format": self.format,
            "state": self.state,
            "target_uri": self.target_uri,
        }
        if self.duration is not None:
            body["duration"] = self.duration
        return body


@dataclass
class Bridge:
    """A bridge created through ARI; it lives until DELETE /bridges/{bridgeId}."""

    id: str
    name: str
    bridge_type: str
    created_at: float = field(default_factory=time.time)
    channel_ids: list[str] = field(default_factory=list)
    recording: LiveRecording | None = None
    # Applications whose channels were ever in the bridge: they get the bridge's events.
    apps: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "technology": "simple_bridge",
            "bridge_type": self.bridge_type,
            "bridge_class": "stasis",
            "creator": "Stasis",
            "name": self.name,
            "channels": list(self.channel_ids),
            "creationtime": ari_timestamp(self.created_at),
            "video_mode": "talker",
        }
