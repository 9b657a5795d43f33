"""Fixtures for call-flow tests: a fake Asterisk, a seeded company and `pbx-bridge serve` itself."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from models import Call, Company, Destination, Source, TrackingNumber
from pbx_bridge.storage import Database
from tests.fake_asterisk import FakeAsterisk

ARI_USER = "pbx-bridge"
ARI_PASSWORD = "fake-secret"
TRACKED = "+74951110001"
TRACKED_DIALED = "74951110001"
OFFICE = "PJSIP/office"
MOBILE = "PJSIP/+79030000001@trunk"


@pytest.fixture
async def fake_asterisk() -> AsyncIterator[FakeAsterisk]:
    fake = FakeAsterisk(app="calltracking", username=ARI_USER, password=ARI_PASSWORD)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def company(database: Database) -> int:
    """A company with a two-destination hunt list and one static number of a source."""
    async with database.transaction() as session:
        company = Company(name="Okna Moskvy", timezone="Europe/Moscow", ring_timeout=20)
        company.destinations = [
            Destination(position=1, endpoint=OFFICE),
            Destination(position=2, endpoint=MOBILE, ring_timeout=15),
        ]
        session.add(company)
        await session.flush()
        source = Source(company_id=company.id, name="Yandex Direct", kind="online")
        session.add(source)
        await session.flush()
        session.add(
            TrackingNumber(number=TRACKED, company_id=company.id, mode="static", source_id=source.id)
        )
        return company.id


def write_config(path: Path, database_url: str, ari_url: str, **sections: dict[str, Any]) -> Path:
    values: dict[str, dict[str, Any]] = {
        "database": {"url": database_url},
        "ari": {
            "url": ari_url, "username": ARI_USER, "password": ARI_PASSWORD,
            "reconnect_min_delay": 0.05, "reconnect_max_delay": 0.2,
        },
        "http": {"listen": "127.0.0.1:0"},
        "calls": {"default_destination": OFFICE},
    }
    for name, section in sections.items():
        values.setdefault(name, {}).update(section)
    lines = []
    for name, section in values.items():
        lines.append(f"[{name}]")
        for key, value in section.items():
            lines.append(f"{key} = {_toml_value(value)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class ServeProcess:
    """`pbx-bridge serve` in a child process, as an operator runs it."""

    process: asyncio.subprocess.Process
    log_path: Path

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except asyncio.TimeoutError:
                self.process.kill()
                await self.process.wait()
        return self.process.returncode

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


async def start_serve(
    config_path: Path, fake: FakeAsterisk, tmp_path: Path, log_level: str = "DEBUG"
) -> ServeProcess:
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PBX_BRIDGE_CONFIG", None)
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pbx_bridge", "--config", str(config_path), "serve",
            "--log-level", log_level, stdout=log_file, stderr=log_file, env=env,
        )
    serve = ServeProcess(process, log_path)
    try:
        await fake.wait_for(lambda: fake.websocket_count > 0, timeout=20)
    except BaseException:
        # A process that never connected is stopped here: the caller has no handle to stop it.
        await serve.stop()
        raise
    return serve


@pytest.fixture
async def serve(database_url: str, company: int, fake_asterisk: FakeAsterisk, tmp_path: Path) -> AsyncIterator[ServeProcess]:
    config = write_config(tmp_path / "pbx-bridge.toml", database_url, fake_asterisk.url)
    process = await start_serve(config, fake_asterisk, tmp_path)
    yield process
    await process.stop()


async def journal_row(database: Database, channel_id: str, timeout: float = 10.0) -> Call:
    """The call's journal row once it is complete (outcome set and recording settled)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with database.sessions() as session:
            call = await session.scalar(
                select(Call).where(Call.channel_id == channel_id).options(selectinload(Call.recording))
            )
        settled = call is not None and call.ended_at is not None and (
            call.recording is None or call.recording.state in ("done", "failed")
        )
        if settled:
            return call
        if loop.time() > deadline:
            raise AssertionError(f"journal row of {channel_id} not complete after {timeout} s: {call!r}")
        await asyncio.sleep(0.05)


def event_time(fake: FakeAsterisk, event_type: str, channel_id: str, **match: Any) -> datetime:
    """Asterisk's timestamp of the first event of `event_type` for a channel (as channel or peer)."""
    for event in fake.events + fake.undelivered_events:
        channel = event.get("channel") or event.get("peer") or {}
        if event["type"] != event_type or channel.get("id") != channel_id:
            continue
        if all(event.get(key) == value for key, value in match.items()):
            return datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z")
    raise AssertionError(f"no {event_type} event for {channel_id} with {match}")


def seconds_between(start: datetime, end: datetime) -> float:
    return round((end - start).total_seconds(), 3)
