"""Benchmark of the call flow: CPU time per call and event-to-REST reaction times.

Runs `pbx-bridge serve` as a child process against the fake Asterisk of the test tree. It places
`--calls` calls at a steady rate, so that about `--in-flight` calls are up at once (each call
rings 2 s and talks 6 s). It prints a reference figure of the machine first and after each
database's run, and for each run:

- the serve process's CPU time (user + system) per complete call;
- the time from a websocket event sent by the fake to pbx-bridge's REST reaction, p50 and p99,
  for StasisStart -> ring, leg StasisStart -> dial, Dial ANSWER -> answer.

Both processes share this machine, so the figures include the fake's own load.

    python bench/call_flow.py --database sqlite --calls 1000 --in-flight 200
    python bench/call_flow.py --database postgres
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select  # noqa: E402

from models import Call, Company, Destination, Source, TrackingNumber  # noqa: E402
from pbx_bridge.storage import Database  # noqa: E402
from pbx_bridge.storage.migrations import upgrade  # noqa: E402
from tests.calls.conftest import ARI_PASSWORD, ARI_USER, start_serve, write_config  # noqa: E402
from tests.fake_asterisk import Answer, FakeAsterisk  # noqa: E402

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RING_SECONDS = 2.0
TALK_SECONDS = 6.0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--calls", type=int, default=1000, help="calls in total (default 1000)")
    parser.add_argument("--in-flight", type=int, default=200, help="calls up at once (default 200)")
    parser.add_argument(
        "--postgres-socket", metavar="DIR",
        help="connect serve to PostgreSQL through the Unix socket in DIR, such as /var/run/postgresql, "
        "instead of 127.0.0.1:5432",
    )
    args = parser.parse_args()

    backends = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    print("figures from machines, or moments, whose references differ are not comparable")
    _print_machine_reference()
    for backend in backends:
        with tempfile.TemporaryDirectory() as folder:
            url, cleanup = await _database(backend, Path(folder), args.postgres_socket)
            try:
                await _run(backend, url, Path(folder), args.calls, args.in_flight)
            finally:
                await cleanup()
        # A shared machine's speed drifts within minutes: a reference after each run shows it.
        _print_machine_reference()


def _print_machine_reference() -> None:
    python_ms, round_trip_us = _machine_reference()
    print(f"machine reference: Python loop {python_ms:.0f} ms, loopback TCP round trip {round_trip_us:.1f} us of CPU")


async def _database(backend: str, folder: Path, socket_folder: str | None):
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{folder / 'bench.db'}"

        async def nothing() -> None:
            return None

        await upgrade(url)
        return url, nothing

    import asyncpg

    name = f"pbx_bridge_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(POSTGRES_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    if socket_folder:
        url = f"postgresql+asyncpg://postgres@/{name}?host={socket_folder}"
    await upgrade(url)

    async def drop() -> None:
        connection = await asyncpg.connect(POSTGRES_ADMIN)
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.close()

    return url, drop


async def _seed(database: Database) -> None:
    async with database.transaction() as session:
        company = Company(name="Bench", ring_timeout=20)
        company.destinations = [Destination(position=1, endpoint="PJSIP/office")]
        session.add(company)
        await session.flush()
        source = Source(company_id=company.id, name="Bench source")
        session.add(source)
        await session.flush()
        session.add(TrackingNumber(number="+74951110001", company_id=company.id, source_id=source.id))


def _machine_reference() -> tuple[float, float]:
    """Return the CPU cost here of two fixed workloads: a Python loop in milliseconds, and one
    loopback TCP round trip of one byte each way in microseconds."""
    started = time.process_time()
    sum(number * number for number in range(1_000_000))
    python_ms = (time.process_time() - started) * 1000

    round_trips = 20_000
    with socket.create_server(("127.0.0.1", 0)) as server:
        with socket.create_connection(server.getsockname()) as client:
            peer, _ = server.accept()
            with peer:
                started = time.process_time()
                for _ in range(round_trips):
                    client.sendall(b"x")
                    peer.recv(1)
                    peer.sendall(b"x")
                    client.recv(1)
                round_trip_us = (time.process_time() - started) / round_trips * 1e6
    return python_ms, round_trip_us


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


async def _run(backend: str, url: str, folder: Path, calls: int, in_flight: int) -> None:
    database = Database(url)
    await _seed(database)
    fake = FakeAsterisk(app="calltracking", username=ARI_USER, password=ARI_PASSWORD)
    await fake.start()
    fake.script_endpoint("PJSIP/office", Answer(after=RING_SECONDS, hangup_after=TALK_SECONDS))
    serve = await start_serve(
        write_config(folder / "bench.toml", url, fake.url), fake, folder, log_level="WARNING"
    )
    try:
        pid = serve.process.pid
        cpu_before = _cpu_seconds(pid)
        started = time.monotonic()
        # Arrivals spread evenly, as real traffic comes, rather than in one burst.
        interval = (RING_SECONDS + TALK_SECONDS) / in_flight

        async def one_call(index: int) -> None:
            await asyncio.sleep(index * interval)
            call = await fake.incoming_call("74951110001", caller_number=f"+7916{index:07d}")
            await fake.wait_for(lambda: not fake.channel_exists(call.channel_id), timeout=120)

        await asyncio.gather(*(one_call(index) for index in range(calls)))
        await _wait_journal(database, calls)
        elapsed = time.monotonic() - started
        user_after, system_after = _cpu_seconds(pid)
        user, system = user_after - cpu_before[0], system_after - cpu_before[1]
        cpu = user + system
    finally:
        await serve.stop()
        await fake.stop()
        await database.close()

    transport = " over a Unix socket" if "?host=" in url else ""
    print(f"\n== {backend}{transport}: {calls} calls, {in_flight} in flight, {elapsed:.1f} s wall")
    print(
        f"serve CPU: {cpu:.2f} s in total ({user:.2f} s user, {system:.2f} s system), "
        f"{cpu / calls * 1000:.2f} ms per call (goal <= 3 ms)"
    )
    print(f"REST requests per call: {len(fake.requests) / calls:.1f}, events per call: {len(fake.events) / calls:.1f}")
    for label, latencies in _reactions(fake).items():
        if not latencies:
            continue
        latencies.sort()
        p50 = statistics.median(latencies) * 1000
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
        print(f"{label:32s} n={len(latencies):5d}  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms (goal p99 < 20 ms)")


async def _wait_journal(database: Database, calls: int) -> None:
    for _ in range(600):
        async with database.sessions() as session:
            done = await session.scalar(select(func.count()).select_from(Call).where(Call.ended_at.is_not(None)))
        if done >= calls:
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"only {done} of {calls} journal rows completed")


def _reactions(fake: FakeAsterisk) -> dict[str, list[float]]:
    first_request: dict[tuple[str, str], float] = {}
    caller_of_leg: dict[str, str] = {}
    for request in fake.requests:
        first_request.setdefault((request.method, request.path), request.at)
        if request.rest == "POST /channels/create":
            caller_of_leg[request.params["channelId"]] = request.params["appArgs"].split(",")[1]

    pairs = {"StasisStart -> ring": [], "leg StasisStart -> dial": [], "Dial ANSWER -> answer": []}
    for event in fake.events:
        sent = datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
        if event["type"] == "StasisStart":
            channel = event["channel"]["id"]
            if event.get("args", [""])[0] == "outbound":
                key, label = ("POST", f"/channels/{channel}/dial"), "leg StasisStart -> dial"
            else:
                key, label = ("POST", f"/channels/{channel}/ring"), "StasisStart -> ring"
        elif event["type"] == "Dial" and event.get("dialstatus") == "ANSWER":
            caller = caller_of_leg.get(event["peer"]["id"], "")
            key, label = ("POST", f"/channels/{caller}/answer"), "Dial ANSWER -> answer"
        else:
            continue
        if key in first_request:
            pairs[label].append(max(0.0, first_request[key] - sent))
    return pairs


if __name__ == "__main__":
    asyncio.run(main())
