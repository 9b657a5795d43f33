"""Fixtures of the admin API tests: a running application on a migrated database, users of both
roles, and a small journal with known values."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from models import Call, Company, Recording, Role, Source, TokenKind, TrackingNumber, User, VisitorSession, Site
from pbx_bridge.admin.auth import hash_password, issue_token
from pbx_bridge.config import Config, RecordingConfig
from pbx_bridge.http.app import AppContext, build_app
from pbx_bridge.storage import Database

PASSWORD = "correct horse battery"


@dataclass
class World:
    client: TestClient
    database: Database
    recordings: Path
    admin_token: str
    viewer_token: str
    other_viewer_token: str
    company_id: int
    other_company_id: int
    source_id: int
    call_ids: list[int]

    def auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    @property
    def admin(self) -> dict[str, str]:
        return self.auth(self.admin_token)

    @property
    def viewer(self) -> dict[str, str]:
        return self.auth(self.viewer_token)


def at(hour: int, minute: int = 0, day: int = 10) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=timezone.utc)


async def _seed(database: Database) -> dict:
    async with database.transaction() as session:
        company = Company(name="Окна Москвы", timezone="Europe/Moscow")
        other = Company(name="Other Ltd", timezone="UTC")
        session.add_all([company, other])
        await session.flush()
        source = Source(company_id=company.id, name="Яндекс Директ", kind="online")
        other_source = Source(company_id=other.id, name="Billboard")
        session.add_all([source, other_source])
        await session.flush()
        number = TrackingNumber(number="+74951110001", company_id=company.id, source_id=source.id)
        session.add(number)
        site = Site(company_id=company.id, name="okna", site_key="site-key-okna")
        session.add(site)
        await session.flush()
        visit = VisitorSession(
            site_id=site.id,
            visitor_id="v1",
            utm_source="<script>alert(1)</script>",
            utm_campaign="=HYPERLINK(\"http://evil\")",
            referrer="https://ya.ru/?q=окна",
        )
        session.add(visit)
        await session.flush()

        calls = [
            Call(channel_id="c1", company_id=company.id, source_id=source.id, tracking_number_id=number.id,
                 session_id=visit.id, caller_number="+79161112233", caller_raw="89161112233",
                 attribution="static", first_time_caller=True, outcome="answered", answered_by="PJSIP/office",
                 started_at=at(9), wait_seconds=5.0, talk_seconds=60.0),
            Call(channel_id="c2", company_id=company.id, source_id=source.id, tracking_number_id=number.id,
                 caller_number="+79161112233", caller_raw="89161112233", attribution="static",
                 first_time_caller=False, outcome="no-answer", started_at=at(10), wait_seconds=20.0),
            Call(channel_id="c3", company_id=company.id, caller_number=None, caller_raw="anonymous",
                 attribution="unknown-number", outcome="busy", started_at=at(11), wait_seconds=1.0),
            Call(channel_id="c4", company_id=other.id, source_id=other_source.id, caller_number="+79035550000",
                 caller_raw="+79035550000", attribution="static", outcome="answered", answered_by="PJSIP/other",
                 started_at=at(12), wait_seconds=3.0, talk_seconds=30.0),
        ]
        session.add_all(calls)
        await session.flush()
        session.add(Recording(call_id=calls[0].id, name="calltracking/2026/03/10/c1", format="wav", state="done"))
        session.add(Recording(call_id=calls[3].id, name="calltracking/2026/03/10/c4", format="wav", state="done"))

        admin = User(login="admin", password_hash=hash_password(PASSWORD), role=Role.ADMIN.value, language="en")
        viewer = User(login="viewer", password_hash=hash_password(PASSWORD), role=Role.VIEWER.value, company_id=company.id)
        other_viewer = User(login="other", password_hash=hash_password(PASSWORD), role=Role.VIEWER.value, company_id=other.id)
        session.add_all([admin, viewer, other_viewer])
        await session.flush()
        tokens = [
            (await issue_token(session, user, TokenKind.API, name="tests"))[1] for user in (admin, viewer, other_viewer)
        ]
        return {
            "tokens": tokens,
            "company_id": company.id,
            "other_company_id": other.id,
            "source_id": source.id,
            "call_ids": [call.id for call in calls],
        }


@pytest.fixture
async def world(database: Database, tmp_path: Path) -> AsyncIterator[World]:
    recordings = tmp_path / "recordings"
    (recordings / "calltracking/2026/03/10").mkdir(parents=True)
    (recordings / "calltracking/2026/03/10/c1.wav").write_bytes(b"RIFF" + bytes(range(256)) * 4)
    (recordings / "calltracking/2026/03/10/c4.wav").write_bytes(b"RIFF-other")
    (tmp_path / "secret.wav").write_bytes(b"outside the folder")
    seeded = await _seed(database)
    config = replace(Config(), recording=RecordingConfig(folder=str(recordings)))
    app = build_app(AppContext(config=config, database=database))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield World(
            client=client,
            database=database,
            recordings=recordings,
            admin_token=seeded["tokens"][0],
            viewer_token=seeded["tokens"][1],
            other_viewer_token=seeded["tokens"][2],
            company_id=seeded["company_id"],
            other_company_id=seeded["other_company_id"],
            source_id=seeded["source_id"],
            call_ids=seeded["call_ids"],
        )
    finally:
        await client.close()
