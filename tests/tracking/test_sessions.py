import asyncio

import pytest
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select, text

import models
from pbx_bridge.storage import Database
from pbx_bridge.tracking.sessions import NumberKind, TrackingService
from pbx_bridge.tracking.sites import SiteDirectory
from pbx_bridge.tracking.visitor import read_start_request

from tests.conftest import _truncate_postgres
from tests.tracking.conftest import create_site

T0 = datetime(2026, 12, 4, 10, 0, tzinfo=timezone.utc)
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)


def _request(visitor_id: str, **fields: str) -> dict[str, str]:
    body = {
        "site_key": "okna-key-1",
        "visitor_id": visitor_id,
        "page_url": "https://okna.example/catalog",
        "user_agent": CHROME,
    }
    body.update(fields)
    return body


async def _start(database, visitor_id: str, now: datetime = T0, **fields: str):
    service = TrackingService(database, SiteDirectory(database, ttl=0))
    site = await service.sites.get("okna-key-1")
    data = read_start_request(_request(visitor_id, **fields), None)
    return await service.start(site, data, "203.0.113.5", now)


async def _service(database):
    service = TrackingService(database, SiteDirectory(database, ttl=0))
    return service, await service.sites.get("okna-key-1")


async def _count(database, model) -> int:
    async with database.sessions() as session:
        return (await session.execute(select(func.count()).select_from(model))).scalar_one()


async def test_dynamic_source_gets_pool_number(database, site):
    started = await _start(database, "visitor-0001", utm_source="google")

    assert started.kind is NumberKind.POOL
    assert started.number in site.pool_numbers
    assert started.source_id == site.google_source_id
    assert started.heartbeat_interval == 30


async def test_pool_session_records_lease(database, site):
    started = await _start(database, "visitor-0001", utm_source="google")

    async with database.sessions() as session:
        lease = (await session.execute(select(models.NumberLease))).scalar_one()
    assert lease.session_id == started.session_id
    assert lease.leased_at == T0
    assert lease.released_at is None


async def test_static_source_gets_its_number(database, site):
    started = await _start(database, "visitor-0001", referrer="https://news.gazeta.example/a/1")

    assert started.kind is NumberKind.STATIC
    assert started.number == site.newspaper_number
    assert started.source_id == site.newspaper_source_id
    assert started.heartbeat_interval is None


async def test_direct_visit_gets_default_number(database, site):
    started = await _start(database, "visitor-0001")

    assert started.kind is NumberKind.DEFAULT
    assert started.number == site.default_number
    assert started.source_id == site.direct_source_id


async def test_unmatched_visit_gets_default_source(database, site):
    started = await _start(database, "visitor-0001", referrer="https://elsewhere.example/")

    assert started.number == site.default_number
    assert started.source_id == site.default_source_id


async def test_gclid_without_utm_matches_google(database, site):
    started = await _start(database, "visitor-0001", gclid="Cj0KCQiA")

    assert started.source_id == site.google_source_id
    assert started.kind is NumberKind.POOL


async def test_session_records_visitor_details(database, site):
    started = await _start(
        database,
        "visitor-0001",
        utm_source="google",
        utm_campaign="windows",
        yclid="12345",
        ga="GA1.1.111.222",
        ym_uid="1700000000123",
        referrer="https://yandex.ru/search/?text=plastic+windows",
    )

    async with database.sessions() as session:
        row = await session.get(models.VisitorSession, started.session_id)
    assert row.first_visit is True
    assert row.landing_page == "https://okna.example/catalog"
    assert row.referrer_host == "yandex.ru"
    assert row.search_phrase == "plastic windows"
    assert row.utm_campaign == "windows"
    assert row.yclid == "12345"
    assert row.ga_client_id == "GA1.1.111.222"
    assert row.ym_client_id == "1700000000123"
    assert row.device_type == "desktop"
    assert row.browser == "Chrome"
    assert row.os == "Windows"
    assert row.ip == "203.0.113.5"


async def test_returning_visitor_gets_same_number(database, site):
    first = await _start(database, "visitor-0001", utm_source="google")
    await _start(database, "visitor-0002", utm_source="google")

    again = await _start(database, "visitor-0001", T0 + timedelta(minutes=5), utm_source="google")

    assert again.number == first.number
    assert again.session_id == first.session_id
    assert again.resumed is True


async def test_returning_visitor_after_hold_is_not_first(database, site):
    await _start(database, "visitor-0001", utm_source="google")

    later = await _start(database, "visitor-0001", T0 + timedelta(days=1), utm_source="google")

    assert later.resumed is False
    assert later.first_visit is False


async def test_held_number_not_given_to_others(database):
    setup = await create_site(database, pool_size=1)
    service, site = await _service(database)
    first = await _start(database, "visitor-0001", utm_source="google")
    await service.leave(site, first.session_id, "visitor-0001", T0 + timedelta(minutes=1))

    second = await _start(database, "visitor-0002", T0 + timedelta(minutes=10), utm_source="google")

    assert first.number == setup.pool_numbers[0]
    assert second.kind is NumberKind.DEFAULT
    assert second.number == setup.default_number


async def test_number_free_again_after_hold(database):
    setup = await create_site(database, pool_size=1)
    service, site = await _service(database)
    first = await _start(database, "visitor-0001", utm_source="google")
    await service.leave(site, first.session_id, "visitor-0001", T0 + timedelta(minutes=1))

    second = await _start(
        database, "visitor-0002", T0 + timedelta(minutes=16, seconds=1), utm_source="google"
    )

    assert second.kind is NumberKind.POOL
    assert second.number == setup.pool_numbers[0]


async def test_lease_history_is_kept(database):
    await create_site(database, pool_size=1)
    service, site = await _service(database)
    first = await _start(database, "visitor-0001", utm_source="google")
    await service.leave(site, first.session_id, "visitor-0001", T0 + timedelta(minutes=1))
    second = await _start(database, "visitor-0002", T0 + timedelta(hours=1), utm_source="google")

    async with database.sessions() as session:
        leases = (
            await session.execute(select(models.NumberLease).order_by(models.NumberLease.id))
        ).scalars().all()
    assert [lease.session_id for lease in leases] == [first.session_id, second.session_id]
    assert leases[0].released_at == T0 + timedelta(minutes=1)
    assert leases[1].released_at is None


async def test_exhausted_pool_shows_default_number(database):
    setup = await create_site(database, pool_size=1)
    await _start(database, "visitor-0001", utm_source="google")

    second = await _start(database, "visitor-0002", utm_source="google")

    assert second.kind is NumberKind.DEFAULT
    assert second.number == setup.default_number
    assert await _count(database, models.PoolExhaustion) == 1


async def test_exhausted_reuse_takes_least_recent(database):
    setup = await create_site(database, pool_size=2, policy=models.ExhaustedPolicy.REUSE)
    service, site = await _service(database)
    first = await _start(database, "visitor-0001", utm_source="google")
    second = await _start(database, "visitor-0002", T0 + timedelta(seconds=5), utm_source="google")
    await service.heartbeat(site, first.session_id, "visitor-0001", T0 + timedelta(seconds=30))

    third = await _start(database, "visitor-0003", T0 + timedelta(seconds=40), utm_source="google")

    assert third.kind is NumberKind.POOL_REUSED
    assert third.number == second.number
    assert await _count(database, models.PoolExhaustion) == 1
    async with database.sessions() as session:
        reused = (
            await session.execute(
                select(models.NumberLease.reused).where(
                    models.NumberLease.session_id == third.session_id
                )
            )
        ).scalar_one()
    assert reused is True
    assert set(setup.pool_numbers) == {first.number, second.number}


async def test_reuse_spares_numbers_given_in_same_batch(database):
    setup = await create_site(database, pool_size=2, policy=models.ExhaustedPolicy.REUSE)
    service, site = await _service(database)

    async def start(index: int):
        data = read_start_request(_request(f"visitor-{index:04d}", utm_source="google"), None)
        return await service.start(site, data, None, T0)

    first = await start(0)
    # The other four arrive together and share one batch: one gets the free number, and of the
    # three that find the pool exhausted, one takes over the first visitor's number.
    together = await asyncio.gather(*(start(index) for index in range(1, 5)))

    kinds = sorted(result.kind.value for result in together)
    assert kinds == ["default", "default", "pool", "pool-reused"]
    reused = [result.number for result in together if result.kind is NumberKind.POOL_REUSED]
    assert reused == [first.number]
    pooled = [result.number for result in together if result.kind is NumberKind.POOL]
    assert set(pooled + [first.number]) == set(setup.pool_numbers)


async def test_heartbeat_from_other_visitor_is_rejected(database, site):
    service, settings = await _service(database)
    started = await _start(database, "visitor-0001", utm_source="google")

    accepted = await service.heartbeat(settings, started.session_id, "visitor-9999", T0)

    assert accepted is False


async def test_other_visitor_heartbeat_in_owner_batch_is_rejected(database, site):
    service, settings = await _service(database)
    started = await _start(database, "visitor-0001", utm_source="google")

    owner, stranger = await asyncio.gather(
        service.heartbeat(settings, started.session_id, "visitor-0001", T0),
        service.heartbeat(settings, started.session_id, "visitor-9999", T0),
    )

    assert owner is True
    assert stranger is False


async def test_heartbeat_moves_last_seen(database, site):
    service, settings = await _service(database)
    started = await _start(database, "visitor-0001", utm_source="google")

    accepted = await service.heartbeat(
        settings, started.session_id, "visitor-0001", T0 + timedelta(seconds=30)
    )

    async with database.sessions() as session:
        lease = (await session.execute(select(models.NumberLease))).scalar_one()
    assert accepted is True
    assert lease.last_seen_at == T0 + timedelta(seconds=30)


async def test_concurrent_starts_never_share_number(database):
    setup = await create_site(database, pool_size=50)
    service, site = await _service(database)

    async def start(index: int):
        data = read_start_request(_request(f"visitor-{index:04d}", utm_source="google"), None)
        return await service.start(site, data, None, T0)

    results = await asyncio.gather(*(start(index) for index in range(500)))

    pooled = [result.number for result in results if result.kind is NumberKind.POOL]
    defaulted = [result for result in results if result.kind is NumberKind.DEFAULT]
    assert len(pooled) == 50
    assert set(pooled) == set(setup.pool_numbers)
    assert len(defaulted) == 450
    assert all(result.number == setup.default_number for result in defaulted)
    assert await _count(database, models.NumberLease) == 50
    assert await _count(database, models.PoolExhaustion) == 450


async def test_simultaneous_starts_of_one_visitor_share_a_session(database):
    await create_site(database, pool_size=5)
    service, site = await _service(database)

    async def start():
        data = read_start_request(_request("visitor-0001", utm_source="google"), None)
        return await service.start(site, data, None, T0)

    first, second = await asyncio.gather(start(), start())

    assert second.session_id == first.session_id
    assert second.number == first.number
    assert (first.first_visit, second.first_visit) == (True, False)
    assert second.resumed is True
    assert await _count(database, models.VisitorSession) == 1
    assert await _count(database, models.NumberLease) == 1


async def test_two_processes_never_share_a_number(database_url):
    # Two engines stand for two pbx-bridge processes: each batches its own starts, and only
    # the database keeps them apart. Their batches overlap most of the time, not always, so
    # three rounds run, a day apart, each on a pool that is free again.
    first_database, second_database = Database(database_url), Database(database_url)
    try:
        setup = await create_site(first_database, pool_size=50)
        services = [await _service(first_database), await _service(second_database)]

        async def start(index: int, now: datetime, **tags: str):
            service, site = services[index % 2]
            data = read_start_request(_request(f"visitor-{index:05d}", **tags), None)
            return await service.start(site, data, None, now)

        # Direct visits get no pool number. They make both engines compile their statements,
        # so the batches below run side by side rather than one by one.
        await asyncio.gather(*(start(index, T0) for index in range(10000, 10300)))
        rounds = []
        for round_ in range(3):
            now = T0 + timedelta(days=round_)
            rounds.append(
                await asyncio.gather(
                    *(start(round_ * 1000 + index, now, utm_source="google") for index in range(300))
                )
            )
        async with first_database.sessions() as session:
            leased = (await session.execute(select(models.NumberLease.number_id))).scalars().all()
    finally:
        await first_database.close()
        await second_database.close()

    for results in rounds:
        pooled = [result.number for result in results if result.kind is NumberKind.POOL]
        assert sorted(pooled) == sorted(setup.pool_numbers)
        assert sum(result.kind is NumberKind.DEFAULT for result in results) == 250
    assert len(leased) == 150


async def test_latest_session_lookup_reads_one_index_entry(database):
    from pbx_bridge.tracking.sessions import _LATEST_SESSIONS_POSTGRES, _LATEST_SESSIONS_SQLITE

    await create_site(database)
    async with database.engine.connect() as connection:
        if database.is_sqlite:
            rows = await connection.execute(
                text("EXPLAIN QUERY PLAN " + _LATEST_SESSIONS_SQLITE.text),
                {"site_id": 1, "visitor_ids": '["visitor-0001", "visitor-0002"]'},
            )
            plan = "\n".join(str(row[-1]) for row in rows)
        else:
            # A near-empty table is scanned rather than read by index, so turn scans off.
            await connection.execute(text("SET LOCAL enable_seqscan = off"))
            sql = str(_LATEST_SESSIONS_POSTGRES.compile(dialect=database.engine.dialect))
            rows = await connection.exec_driver_sql("EXPLAIN " + sql, (["visitor-0001"], 1))
            plan = "\n".join(row[0] for row in rows)
        await connection.rollback()

    assert "ix_visitor_sessions_site_id_visitor_id_started_at_id" in plan
    assert "Sort" not in plan
    assert "TEMP B-TREE" not in plan


@pytest.fixture
def postgres_database_url(postgres_url: str):
    """The migrated PostgreSQL database alone: SQLite does not serialize one visitor's starts
    across processes, so the test below runs on PostgreSQL only."""
    yield postgres_url
    asyncio.run(_truncate_postgres(postgres_url))


@pytest.mark.postgres
async def test_two_processes_give_one_visitor_one_session(postgres_database_url):
    first_database = Database(postgres_database_url)
    second_database = Database(postgres_database_url)
    try:
        await create_site(first_database, pool_size=100)
        services = [await _service(first_database), await _service(second_database)]

        async def start(index: int, engine: int, **tags: str):
            service, site = services[engine]
            data = read_start_request(_request(f"visitor-{index:05d}", **tags), None)
            return await service.start(site, data, None, T0)

        # Warm both engines up first, as in the test above, so that their batches overlap.
        await asyncio.gather(*(start(10000 + index, index % 2) for index in range(300)))
        results = await asyncio.gather(
            *(start(index, engine, utm_source="google") for index in range(40) for engine in (0, 1))
        )
        async with first_database.sessions() as session:
            sessions = (
                await session.execute(
                    select(models.VisitorSession.visitor_id).where(
                        models.VisitorSession.utm_source == "google"
                    )
                )
            ).scalars().all()
    finally:
        await first_database.close()
        await second_database.close()

    assert sorted(sessions) == [f"visitor-{index:05d}" for index in range(40)]
    assert sum(result.first_visit for result in results) == 40
    assert len({result.number for result in results}) == 40
