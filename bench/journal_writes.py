"""Benchmark of the journal alone: CPU time of each write a call makes.

Runs `Journal.open`, `answered` (with a recording) and `finish` for `--calls` calls, one call
after another, in this process, and prints the process's CPU time per call for each step. The
figures include the driver's work in this process (asyncpg's protocol, aiosqlite's thread) and
leave out the database server's. Run alone, they vary by about a tenth between runs, against a
fifth for bench/call_flow.py, so small changes to the journal show here first.

    python bench/journal_writes.py --database both --calls 1500
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from call_flow import _database, _machine_reference, _seed  # noqa: E402

from models import RecordingState  # noqa: E402
from pbx_bridge.calls.journal import CallEnd, CallStart, Journal, RecordingEnd, RecordingStart  # noqa: E402
from pbx_bridge.config import Config  # noqa: E402
from pbx_bridge.storage import Database  # noqa: E402

WARM_UP_CALLS = 100
ATTEMPTS = [{"endpoint": "PJSIP/office", "result": "ANSWER"}]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--calls", type=int, default=1500, help="calls measured (default 1500)")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.database == "both" else [args.database]

    python_ms, round_trip_us = _machine_reference()
    print(f"machine reference: Python loop {python_ms:.0f} ms, loopback TCP round trip {round_trip_us:.1f} us")
    for backend in backends:
        with tempfile.TemporaryDirectory() as folder:
            url, cleanup = await _database(backend, Path(folder), None)
            try:
                await _run(backend, url, args.calls)
            finally:
                await cleanup()


async def _run(backend: str, url: str, calls: int) -> None:
    database = Database(url)
    await _seed(database)
    journal = Journal(database, Config().calls)
    try:
        for index in range(WARM_UP_CALLS):
            await _call(journal, f"warm-up-{index}", f"+7926{index:07d}")
        totals = {"open": 0.0, "answered": 0.0, "finish": 0.0}
        for index in range(calls):
            for step, seconds in (await _call(journal, f"call-{index}", f"+7916{index:07d}")).items():
                totals[step] += seconds
    finally:
        await journal.close()
        await database.close()

    per_call = {step: seconds / calls * 1e6 for step, seconds in totals.items()}
    steps = ", ".join(f"{step} {micros:.0f}" for step, micros in per_call.items())
    print(f"{backend}: {sum(per_call.values()):.0f} us of CPU per call ({steps})")


async def _call(journal: Journal, channel_id: str, caller: str) -> dict[str, float]:
    """Write one answered call's row the way the call flow does, and return each step's CPU seconds."""
    now = datetime.now(timezone.utc)
    start = CallStart(
        channel_id=channel_id, linkedid=channel_id, dialed_raw="74951110001", caller_raw=caller,
        caller_number=caller, caller_name=None, started_at=now,
    )
    before_open = time.process_time()
    call_id, _ = await journal.open(start)
    before_answered = time.process_time()
    await journal.answered(
        call_id, at=now, endpoint="PJSIP/office", outbound_channel_id=f"out-{channel_id}",
        attempts=ATTEMPTS, recording=RecordingStart(name=f"bench/{channel_id}", format="wav", started_at=now),
    )
    before_finish = time.process_time()
    end = CallEnd(
        outcome="answered", ended_at=now, wait_seconds=2.0, talk_seconds=6.0, hangup_cause=16,
        hangup_cause_text="Normal Clearing", hangup_side="caller", attempts=ATTEMPTS, answered_at=now,
        answered_by="PJSIP/office", outbound_channel_id=f"out-{channel_id}",
    )
    await journal.finish(call_id, end, RecordingEnd(state=RecordingState.DONE, duration_seconds=6))
    after = time.process_time()
    return {
        "open": before_answered - before_open,
        "answered": before_finish - before_answered,
        "finish": after - before_finish,
    }


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
