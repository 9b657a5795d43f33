"""Micro-benchmark of the ARI client: CPU time per REST request and per websocket event.

Starts a small ARI-like aiohttp server in a child process on 127.0.0.1 (a free port), then
measures this process's CPU time (user + system, from resource.getrusage) for:

- REST requests, one at a time and `--concurrency` at once. Each round is the nine requests
  of one tracked call (ring, create_bridge, create_channel, dial, answer, add_channel,
  record_bridge, hangup, destroy_bridge). The server responds as Asterisk does: 204, or 200 or
  201 with a JSON body.
- websocket events delivered to a handler that does nothing. The server paces them at
  `--event-rate` per second, so most events arrive alone, as at the call flow's low rate.

Each figure is measured for plain aiohttp with its defaults (a ClientSession, `request(...,
params=, json=)`, `read()`, json.loads) and for AriClient as configured, and the ratio is
printed. Every measurement runs `--repeat` times and the median is printed with the range.

    python bench/ari_client.py                 # on uvloop, as serve runs
    python bench/ari_client.py --loop asyncio
    python bench/ari_client.py --requests 9000 --events 5000 --repeat 7
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import resource
import statistics
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pbx_bridge.ari import AriClient  # noqa: E402

USERNAME = "bench"
PASSWORD = "bench-password"
APP = "calltracking"
AUTHORIZATION = {"Authorization": "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()}

CHANNEL = {
    "id": "1733356800.101",
    "name": "PJSIP/office-00000065",
    "state": "Down",
    "protocol_id": "",
    "caller": {"name": "", "number": "+79161234567"},
    "connected": {"name": "", "number": ""},
    "accountcode": "",
    "dialplan": {
        "context": "calltracking",
        "exten": "s",
        "priority": 1,
        "app_name": "Stasis",
        "app_data": "calltracking,outbound,1733356800.100",
    },
    "creationtime": "2026-12-05T00:00:00.000+0000",
    "language": "en",
}
BRIDGE = {
    "id": "call-1733356800.100",
    "technology": "simple_bridge",
    "bridge_type": "mixing",
    "bridge_class": "stasis",
    "creator": "Stasis",
    "name": "call-1733356800.100",
    "channels": [],
    "creationtime": "2026-12-05T00:00:00.000+0000",
    "video_mode": "talker",
}
RECORDING = {
    "name": "calltracking/2026/12/05/1733356800.100",
    "format": "wav",
    "state": "queued",
    "target_uri": "bridge:call-1733356800.100",
}
# A ChannelStateChange as Asterisk sends it, about 570 bytes of JSON.
EVENT = {
    "type": "ChannelStateChange",
    "timestamp": "2026-12-05T00:00:01.000+0000",
    "channel": {**CHANNEL, "state": "Ringing"},
    "asterisk_id": "02:42:ac:11:00:02",
    "application": APP,
}


# -- server (child process) ---------------------------------------------------------------------


def serve() -> None:
    """Run the ARI-like server and print its port on the first line of stdout."""
    from aiohttp import web

    channel_body = json.dumps(CHANNEL).encode()
    bridge_body = json.dumps(BRIDGE).encode()
    recording_body = json.dumps(RECORDING).encode()
    event_frame = json.dumps(EVENT)
    websockets: set[web.WebSocketResponse] = set()

    async def rest(request: web.Request) -> web.StreamResponse:
        await request.read()
        path = request.path
        if request.method == "POST" and path == "/ari/bridges":
            return web.Response(body=bridge_body, content_type="application/json")
        if request.method == "POST" and path == "/ari/channels/create":
            return web.Response(body=channel_body, content_type="application/json")
        if request.method == "POST" and path.endswith("/record"):
            return web.Response(status=201, body=recording_body, content_type="application/json")
        return web.Response(status=204)

    async def events(request: web.Request) -> web.WebSocketResponse:
        websocket = web.WebSocketResponse()
        await websocket.prepare(request)
        websockets.add(websocket)
        try:
            async for _ in websocket:
                pass
        finally:
            websockets.discard(websocket)
        return websocket

    async def send_events(request: web.Request) -> web.Response:
        # Sends `count` frames at `rate` per second to every open websocket, catching up after
        # each sleep, because the loop's timers wake no more often than once a millisecond.
        count = int(request.query["count"])
        rate = float(request.query["rate"])
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent = 0
        while sent < count:
            due = min(count, int((loop.time() - started) * rate) + 1)
            while sent < due:
                for websocket in list(websockets):
                    await websocket.send_str(event_frame)
                sent += 1
            await asyncio.sleep(1 / rate)
        return web.Response(status=204)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/ari/events", events)
        app.router.add_post("/bench/events", send_events)
        app.router.add_route("*", "/{tail:.*}", rest)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# -- client (this process) ----------------------------------------------------------------------


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class PlainClient:
    """The nine requests of a call made the way aiohttp's documentation shows, with defaults."""

    def __init__(self, url: str) -> None:
        self.base = url + "/ari"
        self.session = aiohttp.ClientSession(headers=AUTHORIZATION)

    async def request(
        self, method: str, path: str, query: dict[str, str] | None = None, body: Any = None
    ) -> Any:
        async with self.session.request(method, self.base + path, params=query, json=body) as response:
            content = await response.read()
            if response.status == 204 or not content:
                return None
            return json.loads(content)

    async def call(self, index: int) -> None:
        channel, leg, bridge = f"1733356800.{index}", f"1733356800.{index}-1", f"call-{index}"
        await self.request("POST", f"/channels/{channel}/ring")
        await self.request("POST", "/bridges", {"type": "mixing", "bridgeId": bridge, "name": bridge})
        await self.request(
            "POST",
            "/channels/create",
            {"endpoint": "PJSIP/office", "app": APP, "appArgs": f"outbound,{channel}", "channelId": leg},
            {"variables": {"CT_CALL": channel}},
        )
        await self.request("POST", f"/channels/{leg}/dial", {"caller": channel, "timeout": "20"})
        await self.request("POST", f"/channels/{channel}/answer")
        await self.request("POST", f"/bridges/{bridge}/addChannel", {"channel": f"{channel},{leg}"})
        await self.request(
            "POST",
            f"/bridges/{bridge}/record",
            {"name": f"calltracking/2026/12/05/{channel}", "format": "wav", "ifExists": "fail", "beep": "false"},
        )
        await self.request("DELETE", f"/channels/{channel}", {"reason": "normal"})
        await self.request("DELETE", f"/bridges/{bridge}")

    async def close(self) -> None:
        await self.session.close()


async def ari_call(client: AriClient, index: int) -> None:
    channel, leg, bridge = f"1733356800.{index}", f"1733356800.{index}-1", f"call-{index}"
    await client.ring(channel)
    await client.create_bridge(bridge, name=bridge)
    await client.create_channel(
        "PJSIP/office", channel_id=leg, app_args=f"outbound,{channel}", variables={"CT_CALL": channel}
    )
    await client.dial(leg, caller=channel, timeout=20)
    await client.answer(channel)
    await client.add_channel(bridge, channel, leg)
    await client.record_bridge(bridge, name=f"calltracking/2026/12/05/{channel}")
    await client.hangup(channel)
    await client.destroy_bridge(bridge)


REQUESTS_PER_CALL = 9


async def measure_requests(
    call: Callable[[int], Awaitable[None]], requests: int, concurrency: int
) -> float:
    """Return this process's CPU microseconds per request, `concurrency` calls running at once."""
    calls = max(1, requests // REQUESTS_PER_CALL)
    # Warm-up: opens the pooled connections.
    await asyncio.gather(*(call(index) for index in range(concurrency)))

    queue = iter(range(calls))

    async def worker() -> None:
        for index in queue:
            await call(index)

    started = _cpu()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (_cpu() - started) / (calls * REQUESTS_PER_CALL) * 1e6


class EventCounter:
    """A handler that does nothing but count the events it is given."""

    def __init__(self) -> None:
        self.received = 0

    async def handle(self, event: dict[str, Any]) -> None:
        self.received += 1


async def measure_plain_events(url: str, events: int, rate: float) -> float:
    """Return CPU microseconds per event read with plain aiohttp and json.loads."""
    counter = EventCounter()
    async with aiohttp.ClientSession(headers=AUTHORIZATION) as session:
        async with session.ws_connect(
            url + "/ari/events", params={"app": APP, "subscribeAll": "false"}, heartbeat=20.0
        ) as websocket:

            async def read() -> None:
                async for message in websocket:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        await counter.handle(json.loads(message.data))

            reader = asyncio.create_task(read())
            try:
                return await _measure_events(session, url, events, rate, counter)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)


async def measure_ari_events(url: str, events: int, rate: float) -> float:
    """Return CPU microseconds per event delivered by AriClient.run to a no-op handler."""
    client = AriClient(url, USERNAME, PASSWORD, APP)
    counter = EventCounter()
    connected = asyncio.Event()

    async def on_connect() -> None:
        connected.set()

    runner = asyncio.create_task(client.run(counter.handle, on_connect))
    try:
        await connected.wait()
        async with aiohttp.ClientSession() as session:
            return await _measure_events(session, url, events, rate, counter)
    finally:
        await client.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def _measure_events(
    session: aiohttp.ClientSession, url: str, events: int, rate: float, counter: EventCounter
) -> float:
    # Warm-up: the first frames go through code paths that run once per connection.
    await _trigger(session, url, 10, rate)
    await _wait_for_events(counter, 10)

    started = _cpu()
    # The trigger is one request against thousands of events, so its own CPU time is noise.
    await _trigger(session, url, events, rate)
    await _wait_for_events(counter, 10 + events)
    return (_cpu() - started) / events * 1e6


async def _wait_for_events(counter: EventCounter, total: int) -> None:
    while counter.received < total:
        await asyncio.sleep(0.005)


async def _trigger(session: aiohttp.ClientSession, url: str, count: int, rate: float) -> None:
    # Returns once the server has sent every frame.
    async with session.post(url + "/bench/events", params={"count": count, "rate": rate}) as response:
        response.raise_for_status()


async def run(args: argparse.Namespace) -> None:
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{int(server.stdout.readline())}"
        await _report(url, args)
    finally:
        server.terminate()
        server.wait(timeout=10)


async def _report(url: str, args: argparse.Namespace) -> None:
    print(f"server {url}; {args.requests} requests and {args.events} events a run, {args.repeat} runs, {args.loop} loop")
    print("CPU microseconds of this process (user + system); median [min - max]\n")
    print(f"{'measure':34s} {'plain aiohttp':>22s} {'AriClient':>22s} {'ratio':>6s}")

    for concurrency in (1, args.concurrency):
        runs: dict[str, list[float]] = {"plain": [], "ari": []}
        for repeat in range(args.repeat):
            # Alternating which client goes first spreads a drift in machine load over both.
            for name in ("plain", "ari") if repeat % 2 == 0 else ("ari", "plain"):
                runs[name].append(await _measure_client_requests(name, url, args.requests, concurrency))
        _print_row(f"per request, {concurrency} at once", runs["plain"], runs["ari"])

    runs = {"plain": [], "ari": []}
    for repeat in range(args.repeat):
        for name in ("plain", "ari") if repeat % 2 == 0 else ("ari", "plain"):
            measure = measure_plain_events if name == "plain" else measure_ari_events
            runs[name].append(await measure(url, args.events, args.event_rate))
    _print_row(f"per event, {args.event_rate:g}/s", runs["plain"], runs["ari"])


async def _measure_client_requests(name: str, url: str, requests: int, concurrency: int) -> float:
    if name == "plain":
        plain = PlainClient(url)
        try:
            return await measure_requests(plain.call, requests, concurrency)
        finally:
            await plain.close()

    client = AriClient(url, USERNAME, PASSWORD, APP)
    try:
        return await measure_requests(lambda index: ari_call(client, index), requests, concurrency)
    finally:
        await client.close()


def _print_row(label: str, plain: list[float], ari: list[float]) -> None:
    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):6.1f} [{min(values):.0f}-{max(values):.0f}]"

    ratio = statistics.median(ari) / statistics.median(plain)
    print(f"{label:34s} {cell(plain):>22s} {cell(ari):>22s} {ratio:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4500, help="REST requests a run (default 4500)")
    parser.add_argument("--concurrency", type=int, default=20, help="calls at once in the concurrent run (default 20)")
    parser.add_argument("--events", type=int, default=3000, help="websocket events a run (default 3000)")
    parser.add_argument("--event-rate", type=float, default=1000.0, help="events per second the server sends (default 1000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each measurement (default 5)")
    parser.add_argument(
        "--loop", choices=["uvloop", "asyncio"], default="uvloop",
        help="event loop of the measuring process (default uvloop, which serve uses where installed)",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    loop_factory = None
    if args.loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(run(args))


if __name__ == "__main__":
    main()
