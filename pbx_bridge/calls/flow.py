"""The life of one inbound call, from its StasisStart to its journal row's last field.

A CallFlow receives the ARI events of its own channels one at a time, in order (the router in
`stasis.py` guarantees that), and reacts with REST calls and journal writes. Nothing here parses
websocket frames or speaks SQL.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from models import Call, HangupSide, Outcome, RecordingState
from pbx_bridge.ari import AriClient, AriError, AriUnavailable, Conflict, NotFound, NotInStasis, ServerError
from pbx_bridge.calls.journal import (
    JOURNAL_ERRORS,
    CallEnd,
    CallStart,
    Journal,
    RecordingEnd,
    RecordingStart,
    stored_recording_name,
)
from pbx_bridge.calls.routing import Destination, Route
from pbx_bridge.config import Config
from pbx_bridge.phones import parse_caller_id

log = logging.getLogger("pbx_bridge.calls")

# Dial statuses that end one attempt and move the hunt on to the next destination.
FAILED_DIAL_STATUSES = frozenset({"BUSY", "NOANSWER", "CHANUNAVAIL", "CONGESTION", "CANCEL", "DONTCALL", "TORTURE", "INVALIDARGS"})
# Dial statuses that mean the far end was reached and the call is in progress there. Asterisk 22
# publishes them for an ARI-dialed leg from its RINGING, PROCEEDING and PROGRESS indications
# (main/bridge_channel.c). A PJSIP line that sends 183 Session Progress in place of 180 Ringing,
# as provider trunks often do, reports PROGRESS only.
REACHED_DIAL_STATUSES = frozenset({"RINGING", "PROCEEDING", "PROGRESS"})
# Q.850 causes a company leg can end with before it answers, read as a Dial status.
CAUSE_TO_DIAL_STATUS = {17: "BUSY", 18: "NOANSWER", 19: "NOANSWER", 21: "CHANUNAVAIL", 34: "CONGESTION"}
# Q.850 causes of the Dial statuses that Asterisk publishes before the leg's ChannelHangupRequest
# with that cause. A call whose last destination reported one ends before the cause arrives.
DIAL_STATUS_TO_CAUSE = {"BUSY": 17, "CONGESTION": 34}
# Asterisk's texts (ast_cause2str) for the causes a call commonly ends with, used when an event
# carries the number without `cause_txt`.
CAUSE_TEXTS = {
    16: "Normal Clearing",
    17: "User busy",
    18: "No user responding",
    19: "User alerting, no answer",
    21: "Call Rejected",
    31: "Normal, unspecified",
    34: "Circuit/channel congestion",
    127: "Interworking, unspecified",
}
# Seconds past a destination's ring timeout after which pbx-bridge gives up on the leg itself,
# in case Asterisk never reports how the dial ended.
LEG_TIMEOUT_MARGIN = 10.0
# Maximum length of an outbound leg's channel id: the length of the journal's outbound_channel_id.
MAX_LEG_ID_LENGTH = Call.__table__.c.outbound_channel_id.type.length
# Maximum recording duration the journal stores, in seconds, because its column is a 32-bit integer.
MAX_RECORDING_SECONDS = 2**31 - 1
# Seconds a caller hears ringing while the journal row opens, for example while the INSERT waits
# for a lock. After that the call goes to the fallback context and the row is written later.
JOURNAL_OPEN_TIMEOUT = 5.0
# Asterisk names the application's outbound legs by this first Stasis argument.
OUTBOUND_ARG = "outbound"
# Seconds before the first retry of a failed `continue` to the fallback context, doubled after
# each failed retry up to the maximum.
FALLBACK_RETRY_MIN_DELAY = 0.5
FALLBACK_RETRY_MAX_DELAY = 4.0


class Phase(enum.Enum):
    STARTING = "starting"
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"


@dataclass
class Leg:
    """One attempt to reach a destination: the outbound channel pbx-bridge created for it."""

    channel_id: str
    destination: Destination
    in_stasis: bool = False
    status: str | None = None
    done: bool = False
    # Set once Asterisk reported the leg's StasisEnd or ChannelDestroyed: nothing left to hang up.
    gone: bool = False


@dataclass(frozen=True)
class Shutdown:
    """Internal event: pbx-bridge is stopping and gives up control of its calls."""


@dataclass(frozen=True)
class LegTimeout:
    """Internal event: a leg rang past its ring timeout plus a margin without Asterisk ending it."""

    channel_id: str


@dataclass(frozen=True)
class Reconcile:
    """Internal event: the websocket came back and these channels are still in the application."""

    live_channel_ids: frozenset[str]


@dataclass
class CallState:
    started_at: datetime
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    answered_leg: Leg | None = None
    hangup_side: HangupSide | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    tags: set[str] = field(default_factory=set)
    error: str | None = None


class CallFlow:
    def __init__(
        self,
        start_event: dict[str, Any],
        ari: AriClient,
        journal: Journal,
        config: Config,
        registry: Any,
    ) -> None:
        self.ari = ari
        self.journal = journal
        self.config = config
        self.registry = registry

        # Who called which number, from the inbound channel's StasisStart.
        channel = start_event["channel"]
        self.channel_id: str = channel["id"]
        args = start_event.get("args") or []
        self.missing_args = not args
        self.dialed_raw = str(args[0]) if args else str(_object(channel.get("dialplan")).get("exten", ""))
        caller = _object(channel.get("caller"))
        self.caller = parse_caller_id(_text_or_none(caller.get("number")), config.calls.default_region)
        self.caller_name = _text_or_none(caller.get("name")) or None
        # ARI's Channel model has no linkedid. A call from a trunk starts its own linked id, so the
        # caller's channel id is it, unless ari.conf `channelvars` exports CHANNEL(linkedid).
        linkedid = _text_or_none(_object(channel.get("channelvars")).get("CHANNEL(linkedid)"))
        self.linkedid = linkedid or self.channel_id

        # Progress of the call.
        self.state = CallState(started_at=event_time(start_event))
        self.phase = Phase.STARTING
        self.caller_in_stasis = True
        self.route: Route | None = None
        self.pending: list[Destination] = []
        self.legs: dict[str, Leg] = {}
        # First hangup cause Asterisk reported per channel: (cause, text).
        self.causes: dict[str, tuple[int, str | None]] = {}
        # Time of the caller's hangup request, set when the event arrives rather than when the
        # call's task reaches it in the queue.
        self.caller_hangup_at: datetime | None = None
        self.bridge_id = f"ct-{self.channel_id}"
        # Set when the bridge is requested, because a request without a response may have created it.
        self.bridge_requested = False

        # Journal and recording.
        self.call_id: int | None = None
        self.start_record: CallStart | None = None
        self.recording_name: str | None = None
        # Set once Asterisk reported how the recording ended (or it never started).
        self.recording_end: RecordingEnd | None = None
        # The journal's final write waits for the recording to end, so that one write does both.
        self.pending_end: CallEnd | None = None

    # Entry points -------------------------------------------------------------------------

    async def start(self) -> None:
        """Ring the caller, open the journal row and dial the first destination."""
        log.info("call %s: from %s to %s", self.channel_id, self.caller.raw or "(no caller id)", self.dialed_raw)
        if self.missing_args:
            log.warning("call %s: Stasis() got no dialed number argument; using the dialplan extension", self.channel_id)
        await self._ignore_gone(self.ari.ring(self.channel_id))

        self.start_record = CallStart(
            channel_id=self.channel_id,
            linkedid=self.linkedid,
            dialed_raw=self.dialed_raw,
            caller_raw=self.caller.raw,
            caller_number=self.caller.e164,
            caller_name=self.caller_name,
            started_at=self.state.started_at,
        )
        try:
            async with asyncio.timeout(JOURNAL_OPEN_TIMEOUT):
                self.call_id, self.route = await self.journal.open(self.start_record)
        except JOURNAL_ERRORS as error:
            # Without the database there is no route either: the dialplan's fallback dials the
            # company line, and the journal writes the row once the database is back.
            await self.fall_back(f"journal unavailable: {type(error).__name__}: {error}")
            return
        log.info(
            "call %s: %s, company %s, source %s",
            self.channel_id, self.route.attribution.value, self.route.company_id, self.route.source_id,
        )
        if not self.caller_waiting:
            # The caller hung up meanwhile, and the caller's StasisEnd, queued behind, ends the call.
            return
        if not self.route.destinations:
            await self.fall_back(self._no_destination_reason())
            return

        self.pending = list(self.route.destinations)
        self.registry.bind_bridge(self.bridge_id, self)
        self.bridge_requested = True
        try:
            await self.ari.create_bridge(bridge_id=self.bridge_id, name=self.bridge_id)
        except Conflict:
            # A previous pbx-bridge process made this call's bridge before it stopped.
            await self._ignore_gone(self.ari.destroy_bridge(self.bridge_id))
            await self.ari.create_bridge(bridge_id=self.bridge_id, name=self.bridge_id)
        self.phase = Phase.RINGING
        await self._dial_next()

    @property
    def caller_waiting(self) -> bool:
        """Whether the caller is in the application and no hangup request of theirs has arrived."""
        return self.caller_in_stasis and self.caller_hangup_at is None

    def _no_destination_reason(self) -> str:
        """Return the journal's error for a call with nothing to dial, naming the setting to change."""
        if self.route.company_id is None:
            return "no destination to forward to: the number is not tracked and calls.default_destination is empty"
        return f"no destination to forward to: company {self.route.company_id} has no destinations"

    async def handle(self, event: Any) -> None:
        """React to one event of this call's channels, bridge or recording."""
        if isinstance(event, Reconcile):
            await self._reconcile(event.live_channel_ids)
            return
        if isinstance(event, LegTimeout):
            leg = self.legs.get(event.channel_id)
            if leg is not None and not leg.done and self.phase is Phase.RINGING:
                log.warning("call %s: %s gave no dial result in time", self.channel_id, leg.destination.endpoint)
                await self._attempt_failed(leg, "NOANSWER")
            return
        if isinstance(event, Shutdown):
            if self.phase in (Phase.STARTING, Phase.RINGING):
                await self.fall_back("pbx-bridge is shutting down")
            return
        kind = event.get("type")
        if kind == "Dial":
            await self._on_dial(event)
        elif kind == "StasisStart":
            await self._on_leg_entered(event)
        elif kind == "ChannelHangupRequest":
            self._note_cause(event)
        elif kind in ("StasisEnd", "ChannelDestroyed"):
            self._note_cause(event)
            await self._on_channel_gone(event)
        elif kind in ("RecordingFinished", "RecordingFailed"):
            await self._on_recording(event)

    async def fall_back(self, reason: str) -> None:
        """Send the caller on to the fallback context, which dials the company line directly.

        Used whenever pbx-bridge cannot finish a call itself; the journal keeps the reason.
        """
        self.state.error = reason
        if self.phase is Phase.ANSWERED:
            # The parties are talking in the bridge: keep the call, journal the failure at its end.
            log.error("call %s: %s; the answered call goes on", self.channel_id, reason)
            self.state.tags.add("internal-error")
            return
        log.error("call %s: %s; sending the caller to dialplan context %s", self.channel_id, reason, self.config.calls.fallback_context)
        for leg in self.legs.values():
            await self._ignore_gone(self.ari.hangup(leg.channel_id))

        if self.caller_in_stasis and self.phase is not Phase.ANSWERED:
            error = await self._continue_to_fallback()
            if error is None:
                self.caller_in_stasis = False
                self.state.tags.add("fallback")
            elif self.caller_hangup_at is not None:
                log.info("call %s: caller hung up while the fallback was retried", self.channel_id)
                self.state.tags.add("fallback-failed")
                self.caller_in_stasis = False
                self.state.ended_at = self.caller_hangup_at
                await self._finish(Outcome.ABANDONED, HangupSide.CALLER)
                return
            else:
                # NOTE: NotFound here can also mean that an earlier continue, whose response was
                # lost, moved the caller on and the call has ended since. It is journaled as failed.
                log.error("call %s: fallback failed, hanging up: %s", self.channel_id, error)
                self.state.tags.add("fallback-failed")
                await self._ignore_gone(self.ari.hangup(self.channel_id))
        await self._finish(Outcome.FAILED, HangupSide.SYSTEM)

    async def _continue_to_fallback(self) -> AriError | None:
        """Send the caller to the fallback context; return the last error if that failed.

        While Asterisk's REST interface fails (no connection, no response, 5xx), the request is
        retried for `calls.fallback_retry_seconds`, or until pbx-bridge begins stopping. Meanwhile
        the caller hears the ringing that pbx-bridge indicated when the call came in.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.calls.fallback_retry_seconds
        destination = self._first_destination()
        delay = FALLBACK_RETRY_MIN_DELAY
        retried = False
        while True:
            try:
                if destination:
                    await self.ari.set_variable(self.channel_id, "CT_DESTINATION", destination)
                await self.ari.continue_in_dialplan(
                    self.channel_id, context=self.config.calls.fallback_context,
                    extension=self.dialed_raw or None, priority=1,
                )
                return None
            except NotInStasis as error:
                # An earlier attempt whose response was lost may have moved the caller on already,
                # unless the caller hung up meanwhile.
                return None if retried and self.caller_hangup_at is None else error
            except (AriUnavailable, ServerError) as error:
                if loop.time() + delay > deadline:
                    return error
                log.warning("call %s: fallback failed (%s), retrying in %.1f s", self.channel_id, error, delay)
                # A call still retrying when `close` cancels it would keep its row in progress.
                if await self.registry.stopping_within(delay):
                    log.warning("call %s: pbx-bridge is stopping, so the fallback is not retried", self.channel_id)
                    return error
                if self.caller_hangup_at is not None:
                    return error
                delay = min(delay * 2, FALLBACK_RETRY_MAX_DELAY)
                retried = True
            except AriError as error:
                return error

    # Dialing ------------------------------------------------------------------------------

    def _caller_id_variables(self) -> dict[str, str] | None:
        """Caller id for the company line. `dial` with `caller` already sets the leg's connected
        line, which PJSIP sends as From; these variables also reach Local channels and queues."""
        number = self.caller.e164 or self.caller.raw
        if not number:
            return None
        variables = {"CALLERID(num)": number}
        if self.caller_name:
            variables["CALLERID(name)"] = self.caller_name
        return variables

    async def _dial_next(self) -> None:
        # After the caller's hangup request no further line is dialed, because it would ring for a
        # caller who is gone. The caller's StasisEnd, queued behind, ends the call.
        while self.pending and self.caller_waiting:
            destination = self.pending.pop(0)
            # Unique across processes: a call taken over after a restart must not reuse a leg id
            # that the previous process's leg may still hold in Asterisk. The caller's channel id
            # is cut so that the leg id fits the journal's outbound_channel_id column.
            suffix = f"-{len(self.legs) + 1}-{secrets.token_hex(3)}"
            leg_id = self.channel_id[: MAX_LEG_ID_LENGTH - len(suffix)] + suffix
            leg = Leg(channel_id=leg_id, destination=destination)
            self.legs[leg.channel_id] = leg
            # Events of the new channel can arrive before the REST answer: bind its id first.
            self.registry.bind_channel(leg.channel_id, self)
            try:
                await self.ari.create_channel(
                    endpoint=destination.endpoint,
                    channel_id=leg.channel_id,
                    app_args=f"{OUTBOUND_ARG},{self.channel_id}",
                    variables=self._caller_id_variables(),
                )
            except AriError as error:
                log.warning("call %s: cannot create a channel to %s: %s", self.channel_id, destination.endpoint, error)
                self._close_attempt(leg, "CHANUNAVAIL", str(error))
                if isinstance(error, AriUnavailable):
                    # A missing response is Asterisk's failure, not the company line's, and the next
                    # destination would wait for the same REST API. The fallback context dials the line.
                    await self.fall_back(f"cannot create a channel to {destination.endpoint}: {error}")
                    return
                continue
            log.info("call %s: ringing %s (%s s)", self.channel_id, destination.endpoint, destination.ring_timeout)
            self.registry.post_later(self, destination.ring_timeout + LEG_TIMEOUT_MARGIN, LegTimeout(leg.channel_id))
            return
        if self.caller_waiting and self.phase is Phase.RINGING:
            await self._give_up()

    async def _on_leg_entered(self, event: dict[str, Any]) -> None:
        leg = self.legs.get(event["channel"]["id"])
        if leg is None or leg.done:
            return
        leg.in_stasis = True
        try:
            await self.ari.dial(leg.channel_id, caller=self.channel_id, timeout=leg.destination.ring_timeout)
        except AriError as error:
            log.warning("call %s: dialing %s failed: %s", self.channel_id, leg.destination.endpoint, error)
            if isinstance(error, AriUnavailable):
                # A missing response is Asterisk's failure, as for the leg's create request, so the
                # fallback context dials the line. fall_back also hangs up this leg.
                self._close_attempt(leg, "CHANUNAVAIL", str(error))
                await self.fall_back(f"cannot dial {leg.destination.endpoint}: {error}")
                return
            await self._attempt_failed(leg, "CHANUNAVAIL", str(error))

    async def _on_dial(self, event: dict[str, Any]) -> None:
        leg = self.legs.get((event.get("peer") or {}).get("id", ""))
        if leg is None or leg.done:
            return
        status = event.get("dialstatus") or ""
        leg.status = status or leg.status
        if status == "ANSWER":
            await self._on_answered(leg, event_time(event))
        elif status in FAILED_DIAL_STATUSES:
            await self._attempt_failed(leg, status)

    async def _attempt_failed(self, leg: Leg, status: str, error: str | None = None) -> None:
        self._close_attempt(leg, status, error)
        if not leg.gone:
            await self._ignore_gone(self.ari.hangup(leg.channel_id))
        log.info("call %s: %s did not answer (%s)", self.channel_id, leg.destination.endpoint, status)
        if self.phase is Phase.RINGING:
            await self._dial_next()

    def _close_attempt(self, leg: Leg, status: str, error: str | None = None, at: datetime | None = None) -> None:
        leg.done = True
        leg.status = status
        attempt = {"endpoint": leg.destination.endpoint, "status": status, "at": (at or now_utc()).isoformat()}
        if error:
            attempt["error"] = error
        self.state.attempts.append(attempt)

    async def _give_up(self) -> None:
        outcome = _missed_outcome(self.state.attempts)
        log.info("call %s: no destination answered, hanging up (%s)", self.channel_id, outcome.value)
        reason = "busy" if outcome is Outcome.BUSY else "normal"
        await self._ignore_gone(self.ari.hangup(self.channel_id, reason=reason))
        self.caller_in_stasis = False
        await self._finish(outcome, HangupSide.SYSTEM)

    # Answer and recording -----------------------------------------------------------------

    async def _on_answered(self, leg: Leg, at: datetime) -> None:
        if self.phase is not Phase.RINGING:
            return
        self.phase = Phase.ANSWERED
        leg.done = True
        self.state.answered_at = at
        self.state.answered_leg = leg
        self.state.attempts.append({"endpoint": leg.destination.endpoint, "status": "ANSWER", "at": at.isoformat()})
        log.info(
            "call %s: answered by %s after %.1f s",
            self.channel_id, leg.destination.endpoint, (at - self.state.started_at).total_seconds(),
        )
        caller_answered = False
        try:
            await self.ari.answer(self.channel_id)
            caller_answered = True
            await self.ari.add_channel(self.bridge_id, self.channel_id, leg.channel_id)
        except NotFound:
            if not caller_answered:
                # The caller hung up as the line answered and never talked, so the call was
                # abandoned. The caller's StasisEnd, queued behind this event, ends it.
                self._undo_answer()
                log.info("call %s: caller hung up as %s answered", self.channel_id, leg.destination.endpoint)
                return
            # One side hung up meanwhile; its StasisEnd is queued behind this event and ends the call.
            log.info("call %s: a leg left before it could be bridged", self.channel_id)
            return
        except AriError as error:
            # The two sides are not connected and would wait in silence. Hang up the company leg
            # and send the caller to the fallback, which dials the company line again.
            self._undo_answer()
            await self.fall_back(f"cannot connect the caller to {leg.destination.endpoint}: {error}")
            return
        recording = await self._start_recording()
        await self.journal.answered(
            self.call_id, at=at, endpoint=leg.destination.endpoint,
            outbound_channel_id=leg.channel_id, attempts=list(self.state.attempts),
            recording=recording,
        )

    def _undo_answer(self) -> None:
        """Return the call to ringing when the caller could not be connected to the answered line."""
        self.phase = Phase.RINGING
        self.state.answered_at = None
        self.state.answered_leg = None

    async def _start_recording(self) -> RecordingStart | None:
        """Ask Asterisk to record the bridge; a failure is journaled and the call goes on."""
        recording = self.config.recording
        if not (recording.enabled and self.route and self.route.record):
            return None
        name = stored_recording_name(recording.name_template.format(
            date=self.state.started_at.strftime("%Y/%m/%d"), call_id=self.channel_id
        ))
        self.recording_name = name
        self.registry.bind_recording(name, self)
        try:
            await self.ari.record_bridge(self.bridge_id, name=name, format=recording.format, if_exists="fail")
        except AriError as failure:
            error = f"recording did not start: {failure}"
            log.warning("call %s: %s", self.channel_id, error)
            self.recording_end = RecordingEnd(RecordingState.FAILED, error=error)
            return RecordingStart(name, recording.format, now_utc(), error=error)
        return RecordingStart(name, recording.format, now_utc())

    async def _on_recording(self, event: dict[str, Any]) -> None:
        if self.recording_end is not None:
            return
        recording = event.get("recording") or {}
        if event["type"] == "RecordingFinished":
            self.recording_end = RecordingEnd(RecordingState.DONE, _recording_duration(recording.get("duration")))
        elif event["type"] == "RecordingFailed":
            cause = recording.get("cause") or "Asterisk reported RecordingFailed"
            log.warning("call %s: recording failed: %s", self.channel_id, cause)
            self.recording_end = RecordingEnd(RecordingState.FAILED, error=cause)
        else:
            return
        await self._write_end()

    # Hangups ------------------------------------------------------------------------------

    def note_hangup_request(self, event: dict[str, Any]) -> None:
        """Record the cause and time of the caller's ChannelHangupRequest as the event arrives.

        StasisApp calls this before queueing the event, so a call that is retrying a request
        learns that its caller is gone. A company leg's cause is noted by `handle`, in queue order.
        """
        if (event.get("channel") or {}).get("id") != self.channel_id:
            return
        self._note_cause(event)
        if self.caller_hangup_at is None:
            self.caller_hangup_at = event_time(event)

    def _note_cause(self, event: dict[str, Any]) -> None:
        if event.get("soft") is True:
            # A soft hangup request, such as a REST DELETE or the end of an ARI dial timeout, carries
            # Asterisk's soft hangup flag in `cause` (32 for AST_SOFTHANGUP_EXPLICIT), not a Q.850 cause.
            return
        cause = _cause_number(event.get("cause"))
        text = event.get("cause_txt")
        channel_id = (event.get("channel") or {}).get("id")
        if cause is not None and channel_id and channel_id not in self.causes:
            self.causes[channel_id] = (cause, text if isinstance(text, str) else None)

    def _hangup_cause(self, side: HangupSide) -> tuple[int | None, str | None]:
        """Return the hangup cause of the side that ended the call: the caller, the answered leg,
        or the last attempt when no destination answered."""
        if side is HangupSide.CALLER:
            # NOTE: a PJSIP caller's BYE reaches the application as a ChannelHangupRequest without
            # a cause, and no ChannelDestroyed follows the caller's StasisEnd, so such a row has no
            # hangup cause (seen with Asterisk 22.10.1).
            channel_id = self.channel_id
        elif self.state.answered_leg is not None:
            channel_id = self.state.answered_leg.channel_id
        elif self.legs:
            channel_id = list(self.legs)[-1]
        else:
            return None, None
        cause, text = self.causes.get(channel_id, (None, None))
        if cause is None and side is HangupSide.SYSTEM and channel_id in self.legs:
            cause = DIAL_STATUS_TO_CAUSE.get(self.legs[channel_id].status)
        if cause is None:
            return None, None
        return cause, text or CAUSE_TEXTS.get(cause)

    async def _on_channel_gone(self, event: dict[str, Any]) -> None:
        channel_id = event["channel"]["id"]
        at = event_time(event)
        if channel_id == self.channel_id:
            await self._on_caller_gone(at)
            return
        leg = self.legs.get(channel_id)
        if leg is None:
            return
        leg.gone = True
        if leg is self.state.answered_leg:
            await self._on_company_hung_up(at)
        elif not leg.done:
            await self._attempt_failed(leg, self._status_of_vanished_leg(leg))

    def _status_of_vanished_leg(self, leg: Leg) -> str:
        """Read a Dial status for a leg that went away before answering without reporting one.

        Asterisk ends an ARI dial that rang until its timeout by hanging the leg up softly
        (cause 32, then StasisEnd) with no Dial NOANSWER event, so a leg that was reached
        (ringing or early media) is unanswered.
        """
        if leg.status in FAILED_DIAL_STATUSES:
            return leg.status
        cause, _ = self.causes.get(leg.channel_id, (None, None))
        if cause in CAUSE_TO_DIAL_STATUS:
            return CAUSE_TO_DIAL_STATUS[cause]
        return "NOANSWER" if leg.status in REACHED_DIAL_STATUSES else "CHANUNAVAIL"

    async def _on_caller_gone(self, at: datetime) -> None:
        if not self.caller_in_stasis:
            return
        self.caller_in_stasis = False
        if self.phase is Phase.ENDED:
            return
        self.state.ended_at = at
        if self.phase is Phase.ANSWERED:
            log.info("call %s: caller hung up", self.channel_id)
            await self._finish(Outcome.ANSWERED, HangupSide.CALLER)
        else:
            log.info("call %s: caller hung up while ringing", self.channel_id)
            await self._finish(Outcome.ABANDONED, HangupSide.CALLER)

    async def _on_company_hung_up(self, at: datetime) -> None:
        if self.phase is not Phase.ANSWERED:
            return
        self.state.ended_at = at
        log.info("call %s: company line hung up", self.channel_id)
        await self._finish(Outcome.ANSWERED, HangupSide.COMPANY)

    async def _finish(self, outcome: Outcome, side: HangupSide) -> None:
        """Tear down what is left of the call and complete its journal row, once."""
        if self.phase is Phase.ENDED:
            return
        self.phase = Phase.ENDED
        state = self.state
        state.ended_at = state.ended_at or now_utc()
        state.hangup_side = side
        # A destination still ringing when the call ends missed the call. Its attempt gets
        # Asterisk's DIALSTATUS for that case, so that the destination report counts it. A leg
        # that was not ringing yet gets no attempt, because its line never showed the call.
        for leg in self.legs.values():
            if not leg.done and leg.status in REACHED_DIAL_STATUSES:
                self._close_attempt(leg, "CANCEL", at=state.ended_at)
        await self._teardown()
        cause, cause_text = self._hangup_cause(side)

        wait_end = state.answered_at or state.ended_at
        talk = None if state.answered_at is None else (state.ended_at - state.answered_at).total_seconds()
        end = CallEnd(
            outcome=outcome.value,
            ended_at=state.ended_at,
            wait_seconds=max(0.0, (wait_end - state.started_at).total_seconds()),
            talk_seconds=None if talk is None else max(0.0, talk),
            hangup_cause=cause,
            hangup_cause_text=cause_text,
            hangup_side=side.value,
            attempts=list(state.attempts),
            answered_at=state.answered_at,
            answered_by=state.answered_leg.destination.endpoint if state.answered_leg else None,
            outbound_channel_id=state.answered_leg.channel_id if state.answered_leg else None,
            error=state.error,
            tags=tuple(sorted(state.tags)),
        )
        self.pending_end = end
        await self._write_end()
        log.info(
            "call %s: ended %s, %s hung up, wait %.1f s, talk %.1f s",
            self.channel_id, outcome.value, side.value, end.wait_seconds, end.talk_seconds or 0.0,
        )

    async def _teardown(self) -> None:
        """Hang up every leg and the caller, then destroy the bridge, which ends its recording.

        Each step tolerates what is already gone: Asterisk answers 404 for a vanished channel,
        bridge or recording, which here means the step is done.
        """
        for leg in self.legs.values():
            if not leg.gone:
                await self._ignore_gone(self.ari.hangup(leg.channel_id))
        if self.caller_in_stasis:
            await self._ignore_gone(self.ari.hangup(self.channel_id))
            self.caller_in_stasis = False
        # Destroying the bridge also ends its recording, and Asterisk then sends RecordingFinished.
        # NOTE: a create request that Asterisk carries out after this DELETE leaves the empty
        # bridge behind, because no later step lists the bridges of ended calls.
        if self.bridge_requested:
            await self._ignore_gone(self.ari.destroy_bridge(self.bridge_id))

    @property
    def recording_pending(self) -> bool:
        """True while Asterisk has not yet reported how the recording ended."""
        return self.recording_name is not None and self.recording_end is None

    async def _write_end(self) -> None:
        """Complete the journal row once both the call and its recording have ended."""
        if self.pending_end is None or self.recording_pending:
            return
        end, self.pending_end = self.pending_end, None
        if self.call_id is None:
            if self.start_record is not None:
                self.journal.write_later(self.start_record, end)
            return
        await self.journal.finish(self.call_id, end, self.recording_end)

    async def recording_timed_out(self) -> None:
        """Complete the row with the call's own clock when RecordingFinished never came."""
        log.warning("call %s: no RecordingFinished from Asterisk; duration taken from the call", self.channel_id)
        state = self.state
        duration = None
        if state.answered_at and state.ended_at:
            duration = int((state.ended_at - state.answered_at).total_seconds())
        self.recording_end = RecordingEnd(RecordingState.DONE, duration)
        await self._write_end()

    # Reconnect ----------------------------------------------------------------------------

    async def _reconcile(self, live: frozenset[str]) -> None:
        """Catch up after a websocket outage, during which Asterisk replayed nothing."""
        if self.phase is Phase.ENDED:
            return
        if self.channel_id not in live:
            # NOTE: Asterisk replays no events, so the hangup's time and cause are unknown. The
            # row ends now, and its talk time may exceed the real one by up to the outage.
            self.state.tags.add("ended-while-disconnected")
            await self._on_caller_gone(now_utc())
            return
        for leg in list(self.legs.values()):
            if leg.done and leg is not self.state.answered_leg:
                continue
            if leg.channel_id not in live:
                # Only the answered leg's end ends the call. A ringing leg that vanished is one
                # failed attempt, and the hunt goes on with the next destination.
                if leg is self.state.answered_leg:
                    self.state.tags.add("ended-while-disconnected")
                await self._on_channel_gone({"channel": {"id": leg.channel_id}, "timestamp": None})
                continue
            if self.phase is Phase.RINGING:
                await self._catch_up_leg(leg)

    async def _catch_up_leg(self, leg: Leg) -> None:
        try:
            channel = await self.ari.get_channel(leg.channel_id)
        except NotFound:
            await self._attempt_failed(leg, leg.status or "CHANUNAVAIL")
            return
        if channel.get("state") == "Up":
            self.state.tags.add("answered-while-disconnected")
            await self._on_answered(leg, now_utc())
        elif not leg.in_stasis:
            # Its StasisStart was lost with the websocket: dial it now.
            await self._on_leg_entered({"channel": channel})

    # Helpers ------------------------------------------------------------------------------

    def _first_destination(self) -> str | None:
        if self.route and self.route.destinations:
            return self.route.destinations[0].endpoint
        return self.config.calls.default_destination or None

    async def _ignore_gone(self, request: Any) -> None:
        try:
            await request
        except NotFound:
            pass
        except AriError as error:
            log.warning("call %s: %s", self.channel_id, error)


def _missed_outcome(attempts: list[dict[str, Any]]) -> Outcome:
    """Return the outcome of a call no destination answered, from its last attempt."""
    last = attempts[-1]["status"] if attempts else None
    return {"BUSY": Outcome.BUSY, "NOANSWER": Outcome.NO_ANSWER}.get(last, Outcome.FAILED)


def _object(value: Any) -> dict[str, Any]:
    """Return an event's object field, or an empty one for another JSON value."""
    return value if isinstance(value, dict) else {}


def _text_or_none(value: Any) -> str | None:
    """Return an event's string field, or None for another JSON value, which the call flow ignores."""
    return value if isinstance(value, str) else None


def _cause_number(value: Any) -> int | None:
    """Return an event's hangup cause, or None unless it is a Q.850 cause number (0 to 127)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        cause = int(value)
    except ValueError:
        return None
    return cause if 0 <= cause <= 127 else None


def _recording_duration(value: Any) -> int | None:
    """Return a recording's duration in seconds, or None for a value the journal cannot store."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= MAX_RECORDING_SECONDS else None


def event_time(event: dict[str, Any]) -> datetime:
    """Asterisk's own time of an event ("2026-12-04T19:25:00.105+0000"), or now when absent."""
    stamp = event.get("timestamp")
    if stamp:
        # fromisoformat reads Asterisk's "+0000" offset from Python 3.11 on, in 0.1 µs where
        # strptime takes 8 µs. It also reads a date alone, which has no time zone: not Asterisk's.
        try:
            at = datetime.fromisoformat(stamp)
        except (TypeError, ValueError):
            at = None
        if at is not None and at.tzinfo is not None:
            return at.astimezone(timezone.utc)
    return now_utc()


def now_utc() -> datetime:
    return datetime.now(timezone.utc)
