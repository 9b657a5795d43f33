from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

import models
from pbx_bridge.tracking.attribution import attribute_pool_call

from tests.tracking.conftest import SiteSetup

T0 = datetime(2026, 12, 4, 10, 0, tzinfo=timezone.utc)
HOLD = timedelta(seconds=900)


async def _lease(
    database,
    site: SiteSetup,
    *,
    visitor_id: str,
    leased_at: datetime,
    last_seen_at: datetime,
    released_at: datetime | None = None,
    number: str | None = None,
    source_id: int | None = None,
) -> int:
    async with database.transaction() as session:
        visitor = models.VisitorSession(
            site_id=site.site_id,
            visitor_id=visitor_id,
            source_id=source_id or site.google_source_id,
            started_at=leased_at,
            last_seen_at=last_seen_at,
        )
        session.add(visitor)
        await session.flush()
        number_id = (
            await session.execute(
                select(models.TrackingNumber.id).where(
                    models.TrackingNumber.number == (number or site.pool_numbers[0])
                )
            )
        ).scalar_one()
        session.add(
            models.NumberLease(
                number_id=number_id,
                session_id=visitor.id,
                leased_at=leased_at,
                last_seen_at=last_seen_at,
                released_at=released_at,
            )
        )
        return visitor.id


async def _attribute(database, number: str, at: datetime):
    async with database.sessions() as session:
        row = (
            await session.execute(
                select(models.TrackingNumber).where(models.TrackingNumber.number == number)
            )
        ).scalar_one()
        return await attribute_pool_call(session, row, at)


async def test_call_during_lease_is_attributed(database, site):
    session_id = await _lease(
        database, site, visitor_id="v1", leased_at=T0, last_seen_at=T0 + timedelta(minutes=2)
    )

    result = await _attribute(database, site.pool_numbers[0], T0 + timedelta(minutes=1))

    assert result.kind is models.Attribution.POOL
    assert result.session_id == session_id
    assert result.source_id == site.google_source_id


async def test_call_one_minute_after_leave_is_attributed(database, site):
    left = T0 + timedelta(minutes=5)
    session_id = await _lease(
        database, site, visitor_id="v1", leased_at=T0, last_seen_at=left, released_at=left
    )

    result = await _attribute(database, site.pool_numbers[0], left + timedelta(minutes=1))

    assert result.kind is models.Attribution.POOL
    assert result.session_id == session_id


async def test_call_after_hold_time_is_unmatched(database, site):
    left = T0 + timedelta(minutes=5)
    await _lease(database, site, visitor_id="v1", leased_at=T0, last_seen_at=left, released_at=left)

    result = await _attribute(database, site.pool_numbers[0], left + HOLD + timedelta(seconds=1))

    assert result.kind is models.Attribution.POOL_UNMATCHED
    assert result.session_id is None
    assert result.source_id == site.default_source_id


async def test_call_after_silent_hold_time_is_unmatched(database, site):
    # The visitor closed the tab without a beacon, so the hold runs from the last heartbeat.
    last_seen = T0 + timedelta(minutes=3)
    await _lease(database, site, visitor_id="v1", leased_at=T0, last_seen_at=last_seen)

    result = await _attribute(database, site.pool_numbers[0], last_seen + HOLD + timedelta(seconds=1))

    assert result.kind is models.Attribution.POOL_UNMATCHED


async def test_call_at_end_of_hold_is_attributed(database, site):
    last_seen = T0 + timedelta(minutes=3)
    session_id = await _lease(database, site, visitor_id="v1", leased_at=T0, last_seen_at=last_seen)

    result = await _attribute(database, site.pool_numbers[0], last_seen + HOLD)

    assert result.kind is models.Attribution.POOL
    assert result.session_id == session_id


async def test_call_before_lease_is_unmatched(database, site):
    await _lease(database, site, visitor_id="v1", leased_at=T0, last_seen_at=T0 + timedelta(minutes=1))

    result = await _attribute(database, site.pool_numbers[0], T0 - timedelta(seconds=1))

    assert result.kind is models.Attribution.POOL_UNMATCHED


async def test_call_on_other_number_is_unmatched(database, site):
    await _lease(database, site, visitor_id="v1", leased_at=T0, last_seen_at=T0 + timedelta(minutes=1))

    result = await _attribute(database, site.pool_numbers[1], T0 + timedelta(seconds=30))

    assert result.kind is models.Attribution.POOL_UNMATCHED


async def test_reused_number_is_ambiguous_and_newest_wins(database, site):
    await _lease(database, site, visitor_id="v1", leased_at=T0, last_seen_at=T0 + timedelta(minutes=10))
    newer = await _lease(
        database,
        site,
        visitor_id="v2",
        leased_at=T0 + timedelta(minutes=2),
        last_seen_at=T0 + timedelta(minutes=10),
        source_id=site.direct_source_id,
    )

    result = await _attribute(database, site.pool_numbers[0], T0 + timedelta(minutes=5))

    assert result.kind is models.Attribution.POOL_AMBIGUOUS
    assert result.session_id == newer
    assert result.source_id == site.direct_source_id


async def test_ambiguous_call_goes_to_most_recently_active(database, site):
    # The newer lease went quiet before the call, but the older one was still heartbeating.
    older = await _lease(
        database, site, visitor_id="v1", leased_at=T0, last_seen_at=T0 + timedelta(minutes=9)
    )
    await _lease(
        database,
        site,
        visitor_id="v2",
        leased_at=T0 + timedelta(minutes=1),
        last_seen_at=T0 + timedelta(minutes=2),
    )

    result = await _attribute(database, site.pool_numbers[0], T0 + timedelta(minutes=8))

    assert result.kind is models.Attribution.POOL_AMBIGUOUS
    assert result.session_id == older


async def test_returning_visitor_leases_are_not_ambiguous(database, site):
    await _lease(
        database,
        site,
        visitor_id="v1",
        leased_at=T0,
        last_seen_at=T0 + timedelta(minutes=1),
        released_at=T0 + timedelta(minutes=1),
    )
    second = await _lease(
        database, site, visitor_id="v1", leased_at=T0 + timedelta(minutes=3), last_seen_at=T0 + timedelta(minutes=4)
    )

    result = await _attribute(database, site.pool_numbers[0], T0 + timedelta(minutes=5))

    assert result.kind is models.Attribution.POOL
    assert result.session_id == second


async def test_past_call_matches_old_lease_history(database, site):
    first = await _lease(
        database,
        site,
        visitor_id="v1",
        leased_at=T0,
        last_seen_at=T0 + timedelta(minutes=1),
        released_at=T0 + timedelta(minutes=1),
    )
    later = T0 + timedelta(hours=2)
    await _lease(database, site, visitor_id="v2", leased_at=later, last_seen_at=later)

    result = await _attribute(database, site.pool_numbers[0], T0 + timedelta(minutes=2))

    assert result.kind is models.Attribution.POOL
    assert result.session_id == first


async def test_number_without_pool_is_unmatched(database, site):
    result = await _attribute(database, site.newspaper_number, T0)

    assert result.kind is models.Attribution.POOL_UNMATCHED
    assert result.source_id is None


async def test_naive_call_time_is_rejected(database, site):
    with pytest.raises(ValueError):
        await _attribute(database, site.pool_numbers[0], T0.replace(tzinfo=None))
