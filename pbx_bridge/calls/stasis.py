"""Routes the Stasis application's ARI events to the call each one belongs to.

Every call has its own queue and task: events of one call are handled in arrival order, calls
run concurrently, so a slow journal write for one call never delays the events of another.
Call logic lives in `flow.py`, not here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pbx_bridge.ari import AriClient, AriError, NotFound
from pbx_bridge.calls.flow import OUTBOUND_ARG, CallFlow, Phase, Reconcile, Shutdown
from pbx_bridge.calls.journal import Journal
from pbx_bridge.config import Config
from pbx_bridge.storage import Database

log = logging.getLogger("pbx_bridge.calls")

# Seconds an ended call keeps listening for Asterisk's RecordingFinished.
RECORDING_FINISH_TIMEOUT = 5.0
# Seconds `close` gives calls to hand their callers to the fallback before it cancels them.
SHUTDOWN_TIMEOUT = 3.0
# The event types the call flow reads. RecordingStarted is not one, because a recording's row
# records only how it ended, so leaving it out saves one of a call's twelve events.
EVENT_TYPES = (
    "StasisStart",
    "StasisEnd",
    "Dial",
    "ChannelHangupRequest",
    "ChannelDestroyed",
    "RecordingFinished",
    "RecordingFailed",
)
# Seconds to wait before taking over a channel that no call owns: its StasisStart may still be
# on its way behind the reconnect.
ORPHAN_GRACE_SECONDS = 1.0


class StasisApp:
    def __init__(self, ari: AriClient, database: Database, config: Config) -> None:
        self.ari = ari
        self.config = config
        self.journal = Journal(database, config.calls)
        self._by_channel: dict[str, CallFlow] = {}
        self._by_bridge: dict[str, CallFlow] = {}
        self._by_recording: dict[str, CallFlow] = {}
        self._queues: dict[CallFlow, asyncio.Queue[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Set when close() begins, so that calls stop waiting to retry a request.
        self._stopping = asyncio.Event()

    @property
    def active_calls(self) -> int:
        return len(self._queues)

    # Registry used by the flows for ids they create ----------------------------------------

    def bind_channel(self, channel_id: str, flow: CallFlow) -> None:
        self._by_channel[channel_id] = flow

    def bind_bridge(self, bridge_id: str, flow: CallFlow) -> None:
        self._by_bridge[bridge_id] = flow

    def bind_recording(self, name: str, flow: CallFlow) -> None:
        self._by_recording[name] = flow

    async def stopping_within(self, seconds: float) -> bool:
        """Wait up to `seconds`. Return True as soon as close() has begun, or False after the wait."""
        if self._stopping.is_set():
            return True
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            return False
        return True

    def post_later(self, flow: CallFlow, delay: float, event: Any) -> None:
        """Queue an internal event on a call after `delay` seconds, unless the call is gone."""

        def post() -> None:
            queue = self._queues.get(flow)
            if queue is not None:
                queue.put_nowait(event)

        asyncio.get_running_loop().call_later(delay, post)

    # Event routing ------------------------------------------------------------------------

    async def handle_event(self, event: dict[str, Any]) -> None:
        """Queue one websocket event on its call; returns at once."""
        if event.get("type") == "StasisStart":
            self._on_stasis_start(event)
            return
        flow = self._flow_for(event)
        if flow is None:
            return
        if event.get("type") == "ChannelHangupRequest":
            flow.note_hangup_request(event)
        self._queues[flow].put_nowait(event)

    def _on_stasis_start(self, event: dict[str, Any]) -> None:
        channel_id = event["channel"]["id"]
        args = event.get("args") or []
        flow = self._by_channel.get(channel_id)
        if flow is not None:
            self._queues[flow].put_nowait(event)
        elif args and args[0] == OUTBOUND_ARG:
            log.warning("outbound channel %s belongs to no known call; hanging it up", channel_id)
            self._spawn(self._hang_up_quietly(channel_id))
        else:
            self._start_call(event)

    def _start_call(self, event: dict[str, Any], taken_over: bool = False) -> None:
        flow = CallFlow(event, self.ari, self.journal, self.config, self)
        if taken_over:
            flow.state.tags.add("taken-over")
        self._by_channel[flow.channel_id] = flow
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._queues[flow] = queue
        self._spawn(self._run(flow, queue), name=f"call-{flow.channel_id}")

    def _flow_for(self, event: dict[str, Any]) -> CallFlow | None:
        for key in ("channel", "peer"):
            channel = event.get(key)
            if channel and channel.get("id") in self._by_channel:
                return self._by_channel[channel["id"]]
        recording = event.get("recording")
        if recording:
            flow = self._by_recording.get(recording.get("name", ""))
            if flow is not None:
                return flow
            target = recording.get("target_uri", "")
            if target.startswith("bridge:"):
                return self._by_bridge.get(target.removeprefix("bridge:"))
        bridge = event.get("bridge")
        if bridge:
            return self._by_bridge.get(bridge.get("id", ""))
        return None

    # One task per call ------------------------------------------------------------------------

    async def _run(self, flow: CallFlow, queue: asyncio.Queue[Any]) -> None:
        try:
            await self._guard(flow, flow.start())
            while flow.phase is not Phase.ENDED:
                await self._guard(flow, flow.handle(await queue.get()))
            await self._await_recording(flow, queue)
        finally:
            self._forget(flow)

    async def _await_recording(self, flow: CallFlow, queue: asyncio.Queue[Any]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECORDING_FINISH_TIMEOUT
        while flow.recording_pending:
            remaining = deadline - loop.time()
            if remaining <= 0:
                await self._guard(flow, flow.recording_timed_out())
                return
            try:
                async with asyncio.timeout_at(deadline):
                    event = await queue.get()
            except TimeoutError:
                continue
            await self._guard(flow, flow.handle(event))

    async def _guard(self, flow: CallFlow, step: Any) -> None:
        """Run one step of a call; on any failure send the caller on in the dialplan.

        The catch is deliberately broad: whatever breaks inside pbx-bridge (a bug, the database,
        Asterisk answering something unexpected), the caller must not be left in silence.
        """
        try:
            await step
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.exception("call %s: unexpected failure", flow.channel_id)
            if flow.phase is Phase.ENDED:
                return
            try:
                await flow.fall_back(f"internal error: {type(error).__name__}: {error}")
            except Exception:
                log.exception("call %s: fallback failed too", flow.channel_id)
                flow.phase = Phase.ENDED

    def _forget(self, flow: CallFlow) -> None:
        self._queues.pop(flow, None)
        for channel_id in (flow.channel_id, *flow.legs):
            if self._by_channel.get(channel_id) is flow:
                del self._by_channel[channel_id]
        if self._by_bridge.get(flow.bridge_id) is flow:
            del self._by_bridge[flow.bridge_id]
        if flow.recording_name is not None and self._by_recording.get(flow.recording_name) is flow:
            del self._by_recording[flow.recording_name]

    def _spawn(self, coroutine: Any, name: str | None = None) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _hang_up_quietly(self, channel_id: str) -> None:
        try:
            await self.ari.hangup(channel_id)
        except AriError as error:
            if not isinstance(error, NotFound):
                log.warning("cannot hang up channel %s: %s", channel_id, error)

    # Reconnect ------------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Bring every known call up to date after the websocket (re)connects.

        Asterisk keeps channels in Stasis while no websocket is attached and replays nothing, so
        calls that ended meanwhile are finished here and the others go on under control.
        """
        await self._limit_events()
        application = await self.ari.get_application()
        live = frozenset(application.get("channel_ids") or ())
        if self._queues:
            log.info("reconciling %d calls with Asterisk", len(self._queues))
        for queue in self._queues.values():
            queue.put_nowait(Reconcile(live))
        for channel_id in live - self._by_channel.keys():
            self._spawn(self._adopt_orphan(channel_id))

    async def _limit_events(self) -> None:
        """Ask Asterisk for only the events the call flow reads: about half of a call's events
        are variable sets, state changes and bridge moves that would only cost CPU here."""
        try:
            await self.ari.set_event_filter(allowed=EVENT_TYPES)
        except AriError as error:
            # Asterisk before 13.26 and 16.3 has no event filter; every event still works.
            log.warning("cannot set the ARI event filter, receiving every event: %s", error)

    async def _adopt_orphan(self, channel_id: str) -> None:
        """Take over a channel in the application that no call owns.

        That happens when its StasisStart was lost with the websocket, or when it was left by a
        previous pbx-bridge process. An unanswered caller becomes a call like any other, a
        stray outbound leg is hung up, and an answered channel is left to talk.
        """
        # Its StasisStart may still be on its way behind the reconnect: give it time to arrive.
        await asyncio.sleep(ORPHAN_GRACE_SECONDS)
        if channel_id in self._by_channel:
            return
        try:
            channel = await self.ari.get_channel(channel_id)
        except AriError:
            return
        if channel_id in self._by_channel:
            return
        dialplan = channel.get("dialplan") or {}
        if dialplan.get("app_name") != "Stasis":
            # It left the application during the grace time, such as a caller that its call sent
            # to the fallback context: taking it over would pull it out of that dialplan.
            return

        # app_data is "calltracking,<args>" for a channel that entered Stasis from the dialplan.
        args = dialplan.get("app_data", "").split(",")[1:]
        if args and args[0] == OUTBOUND_ARG:
            log.warning("hanging up stray outbound channel %s", channel_id)
            await self._hang_up_quietly(channel_id)
        elif channel.get("state") == "Up":
            # NOTE: an answered call left by a previous process keeps talking in its bridge, but
            # its journal row stays in progress: no event of it can be matched to a flow any more.
            log.warning("answered channel %s belongs to no known call; leaving it up", channel_id)
        else:
            log.warning("channel %s is in Stasis without a call; taking it over", channel_id)
            start = {"type": "StasisStart", "timestamp": channel.get("creationtime"), "args": args, "channel": channel}
            self._start_call(start, taken_over=True)

    async def close(self) -> None:
        """Stop handling calls; calls still ringing are sent to the fallback so none is lost.

        Answered calls keep talking in their bridges; their journal rows stay in progress.
        """
        self._stopping.set()
        for queue in self._queues.values():
            queue.put_nowait(Shutdown())
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=SHUTDOWN_TIMEOUT)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.journal.close()
