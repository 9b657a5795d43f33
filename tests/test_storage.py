from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from models import Call, Company, TrackingNumber


async def test_timestamps_come_back_aware_utc(database):
    moscow = timezone(timedelta(hours=3))
    started = datetime(2026, 12, 4, 12, 0, tzinfo=moscow)
    async with database.transaction() as session:
        session.add(Call(channel_id="1.1", attribution="unknown-number", started_at=started))

    async with database.sessions() as session:
        stored = (await session.execute(select(Call.started_at))).scalar_one()

    assert stored.tzinfo is not None
    assert stored.utcoffset() == timedelta(0)
    assert stored == started


async def test_tracking_number_is_unique(database):
    async with database.transaction() as session:
        company = Company(name="Okna")
        session.add(company)
        await session.flush()
        session.add(TrackingNumber(number="+74951110001", company_id=company.id))

    with pytest.raises(IntegrityError):
        async with database.transaction() as session:
            company_id = (await session.execute(select(Company.id))).scalar_one()
            session.add(TrackingNumber(number="+74951110001", company_id=company_id))
