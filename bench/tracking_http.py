"""Benchmark of the public tracking API: session starts and heartbeats through the full endpoint.

Starts `pbx-bridge serve --no-ari --no-delivery` on 127.0.0.1 (`--processes` of them sharing the
port through http.reuse_port) with a fresh database (a SQLite file, or a throwaway PostgreSQL
database), seeds one site with a large pool, and prints:
  - session starts per second at 200 connections (wrk, closed loop);
  - latency percentiles at a steady 1,000 starts per second (open loop, this script's own
    generator, latency measured from each request's scheduled send time);
  - heartbeats per second at 200 connections (wrk) and their ratio to starts.

Usage: python bench/tracking_http.py [--backend sqlite|postgres|both] [--processes 1] [--seconds 10]
Needs wrk (Debian: apt-get install wrk). Everything runs on loopback and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import aiohttp
import asyncpg
from sqlalchemy import text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pbx_bridge.storage import Database  # noqa: E402
from pbx_bridge.storage.migrations import upgrade  # noqa: E402

import models  # noqa: E402

POSTGRES_ADMIN = os.environ.get("PBX_BRIDGE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
ORIGIN = "https://bench.example"
SITE_KEY = "bench-site"
POOL_SIZE = 60_000
# Past sessions, each with a released lease, seeded before the phases. A site in service has a
# history like this, and the planner statistics gathered on it.
HISTORY_SESSIONS = 50_000
CONNECTIONS = 200
STEADY_CONNECTIONS = 256
# Browsers send a user agent; the server parses it (cached per distinct string).
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)

START_LUA = r"""
local counter = 0
local user_agent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
local prefix = ""
setup = function(thread)
  thread:set("prefix", string.format("t%02d", math.random(0, 99)) .. tostring(math.random(100000, 999999)))
end
request = function()
  counter = counter + 1
  local body = string.format(
    '{"site_key":"bench-site","visitor_id":"w%s-%08d","page_url":"https://bench.example/?utm_source=google","utm_source":"google","referrer":"https://www.google.com/"}',
    prefix, counter)
  return wrk.format("POST", "/api/v1/track/session", {["Origin"]="https://bench.example", ["Content-Type"]="text/plain", ["User-Agent"]=user_agent}, body)
end
"""

HEARTBEAT_LUA = r"""
local sessions = {}
for line in io.lines("%(file)s") do
  local id, visitor = line:match("(%%d+) (%%S+)")
  sessions[#sessions + 1] = {id, visitor}
end
request = function()
  local s = sessions[math.random(1, #sessions)]
  local body = string.format('{"site_key":"bench-site","visitor_id":"%%s","session_id":%%s}', s[2], s[1])
  return wrk.format("POST", "/api/v1/track/heartbeat", {["Origin"]="https://bench.example", ["Content-Type"]="text/plain"}, body)
end
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def seed(url: str) -> None:
    await upgrade(url)
    database = Database(url)
    try:
        async with database.transaction() as session:
            company = models.Company(name="Bench")
            session.add(company)
            await session.flush()
            google = models.Source(
                company_id=company.id, name="Google", kind="online", dynamic=True, match_utm_source="google"
            )
            session.add(google)
            await session.flush()
            site = models.Site(
                company_id=company.id, name="bench", site_key=SITE_KEY, allowed_origins=[ORIGIN]
            )
            session.add(site)
            await session.flush()
            pool = models.NumberPool(site_id=site.id, name="main", hold_time=900)
            session.add(pool)
            await session.flush()
            default = models.TrackingNumber(number="+74990000000", company_id=company.id)
            session.add(default)
            await session.flush()
            site.default_number_id = default.id
            pool_id, company_id = pool.id, company.id
        rows = [
            {"number": f"+7495{index:07d}", "company_id": company_id, "mode": "pool", "pool_id": pool_id}
            for index in range(POOL_SIZE)
        ]
        async with database.transaction() as session:
            await session.execute(models.TrackingNumber.__table__.insert(), rows)
        await seed_history(database, site.id, pool_id)
        # A live database has planner statistics, which autovacuum gathers. A fresh one has none
        # for its first minute, and plans made without them read the whole pool per heartbeat.
        # Statistics of empty session tables are as bad. PostgreSQL keeps a generic plan made
        # while a table had a few pages until an ANALYZE of that table invalidates it, such as
        # a sequential scan of visitor_sessions for each foreign-key check of number_leases.
        # With autovacuum off, as on the local test server, that plan stayed for the whole run.
        async with database.engine.begin() as connection:
            await connection.execute(text("ANALYZE"))
    finally:
        await database.close()


async def seed_history(database: Database, site_id: int, pool_id: int) -> None:
    """Store HISTORY_SESSIONS past sessions of a day ago, each with a released lease."""
    day_ago = models.utcnow() - timedelta(days=1)
    sessions = [
        {
            "site_id": site_id, "visitor_id": f"history-{index:08d}", "utm_source": "google",
            "started_at": day_ago, "last_seen_at": day_ago,
        }
        for index in range(HISTORY_SESSIONS)
    ]
    async with database.engine.begin() as connection:
        await connection.execute(models.VisitorSession.__table__.insert(), sessions)
        session_ids = (
            await connection.execute(text("SELECT id FROM visitor_sessions ORDER BY id"))
        ).scalars().all()
        number_ids = (
            await connection.execute(
                text("SELECT id FROM tracking_numbers WHERE pool_id = :pool_id ORDER BY id"),
                {"pool_id": pool_id},
            )
        ).scalars().all()
        leases = [
            {
                "number_id": number_ids[index % len(number_ids)], "session_id": session_id,
                "leased_at": day_ago, "last_seen_at": day_ago, "released_at": day_ago,
            }
            for index, session_id in enumerate(session_ids)
        ]
        await connection.execute(models.NumberLease.__table__.insert(), leases)


async def pool_sessions(url: str, limit: int) -> list[tuple[int, str]]:
    database = Database(url)
    try:
        async with database.sessions() as session:
            rows = await session.execute(
                models.VisitorSession.__table__.select()
                .with_only_columns(models.VisitorSession.id, models.VisitorSession.visitor_id)
                .join(
                    models.TrackingNumber.__table__,
                    models.TrackingNumber.held_by_session_id == models.VisitorSession.id,
                )
                .limit(limit)
            )
            return [(row[0], row[1]) for row in rows]
    finally:
        await database.close()


def start_servers(url: str, port: int, processes: int, folder: Path) -> list[subprocess.Popen]:
    """Start `processes` HTTP-only pbx-bridge processes sharing the port (http.reuse_port)."""
    env = dict(
        os.environ,
        PBX_BRIDGE_DATABASE_URL=url,
        PBX_BRIDGE_HTTP_LISTEN=f"127.0.0.1:{port}",
        PBX_BRIDGE_HTTP_REUSE_PORT="true",
        PBX_BRIDGE_TRACKING_RATE_LIMIT_PER_MINUTE="0",
        PBX_BRIDGE_LOG_LEVEL="ERROR",
    )
    servers = []
    for index in range(processes):
        handle = (folder / f"server-{index}.log").open("w")
        servers.append(
            subprocess.Popen(
                [sys.executable, "-m", "pbx_bridge", "serve", "--no-ari", "--no-delivery"],
                env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO,
            )
        )
    return servers


async def wait_ready(port: int) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as client:
        while time.monotonic() < deadline:
            try:
                async with client.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("pbx-bridge did not start within 30 s")


async def wait_drained(port: int) -> float:
    """Wait until /healthz responds within 100 ms, and return the seconds waited.

    A steady rate above the server's capacity leaves requests queued after the client gave up on
    them. Measuring heartbeats before they are served would measure that backlog instead.
    """
    begin = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as client:
        while time.monotonic() - begin < 300:
            sent = time.perf_counter()
            try:
                async with client.get(f"http://127.0.0.1:{port}/healthz") as response:
                    await response.read()
            except (aiohttp.ClientError, asyncio.TimeoutError):
                continue
            if time.perf_counter() - sent < 0.1:
                break
            await asyncio.sleep(0.5)
    return time.monotonic() - begin


def run_wrk(port: int, script: str, seconds: int, folder: Path) -> dict[str, float]:
    path = folder / f"script-{uuid.uuid4().hex[:6]}.lua"
    path.write_text(script)
    output = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s", str(path), f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", output)
    factor = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return {"rate": rate, "non_2xx": int(non2xx.group(1)) if non2xx else 0, "p99_ms": float(p99.group(1)) * factor}


async def steady_rate(port: int, rate: int, seconds: int) -> dict[str, float]:
    """Send `rate` starts a second on a fixed schedule and measure each from its send slot.

    Open loop over keep-alive connections, written on bare asyncio streams: an aiohttp client
    at this rate would take a good part of a core from the server it measures. A request whose
    slot comes while every connection is busy waits for one, and that wait counts.
    """
    prefix = uuid.uuid4().hex[:8]
    latencies: list[float] = []
    errors = 0
    idle: asyncio.Queue = asyncio.Queue()
    for _ in range(STEADY_CONNECTIONS):
        idle.put_nowait(await asyncio.open_connection("127.0.0.1", port))

    def request(index: int) -> bytes:
        body = json.dumps({
            "site_key": SITE_KEY, "visitor_id": f"s{prefix}-{index:08d}",
            "page_url": "https://bench.example/?utm_source=google", "utm_source": "google",
        }).encode()
        head = (
            f"POST /api/v1/track/session HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Origin: {ORIGIN}\r\nContent-Type: text/plain\r\nUser-Agent: {USER_AGENT}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def exchange(connection, payload: bytes) -> int:
        reader, writer = connection
        writer.write(payload)
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        await reader.readexactly(int(length.group(1)) if length else 0)
        return int(head[9:12])

    async def one(index: int, scheduled: float) -> None:
        nonlocal errors
        connection = await idle.get()
        try:
            # A server slower than the rate builds a backlog; the timeout bounds the phase.
            if await asyncio.wait_for(exchange(connection, request(index)), 30) != 200:
                errors += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError):
            errors += 1
            connection[1].close()
            connection = await asyncio.open_connection("127.0.0.1", port)
        latencies.append(time.perf_counter() - scheduled)
        idle.put_nowait(connection)

    tasks = []
    begin = time.perf_counter()
    for index in range(rate * seconds):
        scheduled = begin + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, scheduled)))
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait()[1].close()
    latencies.sort()

    def percentile(share: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * share))] * 1000

    return {"p50_ms": percentile(0.50), "p99_ms": percentile(0.99), "max_ms": latencies[-1] * 1000, "errors": errors}


async def postgres_database() -> tuple[str, str]:
    name = f"pbx_bridge_bench_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(POSTGRES_ADMIN.replace("postgresql+asyncpg", "postgresql"), timeout=5)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return POSTGRES_ADMIN.rsplit("/", 1)[0] + "/" + name, name


async def drop_postgres(name: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN.replace("postgresql+asyncpg", "postgresql"), timeout=5)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def bench_backend(backend: str, processes: int, seconds: int, folder: Path) -> dict[str, object]:
    postgres_name = None
    if backend == "postgres":
        url, postgres_name = await postgres_database()
    else:
        url = f"sqlite+aiosqlite:///{folder / 'bench.db'}"
    await seed(url)
    port = free_port()
    servers = start_servers(url, port, processes, folder)
    try:
        await wait_ready(port)
        # Each process has its own connections and statement caches; let them all start.
        await asyncio.sleep(2)
        starts = await asyncio.to_thread(run_wrk, port, START_LUA, seconds, folder)
        steady = await steady_rate(port, 1000, seconds)
        steady["drain_s"] = await wait_drained(port)
        sessions = await pool_sessions(url, 20_000)
        sessions_file = folder / "sessions.txt"
        sessions_file.write_text("".join(f"{sid} {vid}\n" for sid, vid in sessions))
        heartbeats = await asyncio.to_thread(
            run_wrk, port, HEARTBEAT_LUA % {"file": sessions_file}, seconds, folder
        )
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
        for server in servers:
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
        if postgres_name:
            await drop_postgres(postgres_name)
    return {"starts": starts, "steady_1000": steady, "heartbeats": heartbeats}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--seconds", type=int, default=10, help="length of each phase (default 10)")
    parser.add_argument(
        "--processes", type=int, default=1,
        help="pbx-bridge HTTP processes sharing the port (default 1)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 1

    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    print(
        f"machine: {os.cpu_count()} CPUs; server: {args.processes} pbx-bridge process(es) on one "
        "port; load generator on the same host"
    )
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix="pbx-bridge-bench-") as folder:
            result = asyncio.run(bench_backend(backend, args.processes, args.seconds, Path(folder)))
        starts, steady, heartbeats = result["starts"], result["steady_1000"], result["heartbeats"]
        print(f"\n[{backend}]")
        print(f"session starts, {CONNECTIONS} connections: {starts['rate']:.0f}/s  p99 {starts['p99_ms']:.1f} ms  non-2xx {starts['non_2xx']}")
        print(f"steady 1000 starts/s: p50 {steady['p50_ms']:.1f} ms  p99 {steady['p99_ms']:.1f} ms  max {steady['max_ms']:.1f} ms  errors {steady['errors']}  backlog drained in {steady['drain_s']:.0f} s")
        print(f"heartbeats, {CONNECTIONS} connections: {heartbeats['rate']:.0f}/s  p99 {heartbeats['p99_ms']:.1f} ms  non-2xx {heartbeats['non_2xx']}")
        print(f"heartbeat/start throughput ratio: {heartbeats['rate'] / starts['rate']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
