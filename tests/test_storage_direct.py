"""DirectConnection: Core statements run on the driver write what SQLAlchemy would write."""

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from models import Call
from pbx_bridge.storage.direct import DirectConnection

_CALLS = Call.__table__
_INSERT = insert(_CALLS).returning(_CALLS.c.id)
MOSCOW = timezone(timedelta(hours=3))


def _values(channel_id: str) -> dict:
    at = datetime(2026, 12, 5, 12, 0, 30, 250000, tzinfo=MOSCOW)
    return {
        "channel_id": channel_id,
        "caller_raw": "Иван <anonymous>",
        "dialed_raw": "74951110001",
        "attribution": "unknown-number",
        "outcome": "answered",
        "first_time_caller": True,
        "talk_seconds": 61.5,
        "tags": ["fallback", "ёлка"],
        "attempts": [{"endpoint": "PJSIP/office", "status": "ANSWER"}],
        "started_at": at,
        "updated_at": at,
    }


async def test_direct_row_reads_back_equal(database):
    async with database.engine.connect() as connection:
        direct = await DirectConnection.under(connection)
        rows = await direct.execute(_INSERT, _values("direct.1"))
        await direct.commit()

    async with database.sessions() as session:
        call = await session.scalar(select(Call).where(Call.channel_id == "direct.1"))
    assert rows[0][0] == call.id
    assert call.caller_raw == "Иван <anonymous>"
    assert call.first_time_caller is True
    assert call.talk_seconds == 61.5
    assert call.tags == ["fallback", "ёлка"]
    assert call.attempts == [{"endpoint": "PJSIP/office", "status": "ANSWER"}]
    assert call.started_at == datetime(2026, 12, 5, 9, 0, 30, 250000, tzinfo=timezone.utc)
    assert call.started_at.tzinfo is not None


async def test_direct_duplicate_raises_integrity_error(database):
    async with database.engine.connect() as connection:
        direct = await DirectConnection.under(connection)
        await direct.execute(_INSERT, _values("direct.2"))
        await direct.commit()
        with pytest.raises(IntegrityError) as raised:
            await direct.execute(_INSERT, _values("direct.2"))
        await connection.invalidate()

    # The values (a caller's name here) stay out of the message.
    assert "Иван" not in str(raised.value)


async def test_direct_missing_default_raises(database):
    values = _values("direct.3")
    del values["updated_at"]
    async with database.engine.connect() as connection:
        direct = await DirectConnection.under(connection)
        with pytest.raises(ValueError, match="missing value for updated_at"):
            await direct.execute(_INSERT, values)


async def test_direct_write_returns_last_rows_and_commits(database):
    async with database.engine.connect() as connection:
        direct = await DirectConnection.under(connection)
        rows = await direct.write([(_INSERT, _values("direct.4")), (_INSERT, _values("direct.5"))])
        await connection.invalidate()

    async with database.sessions() as session:
        ids = dict((await session.execute(
            select(Call.channel_id, Call.id).where(Call.channel_id.in_(["direct.4", "direct.5"]))
        )).all())
    assert rows[0][0] == ids["direct.5"]
    assert set(ids) == {"direct.4", "direct.5"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_direct_write_on_sqlite_is_one_transaction(database):
    async with database.engine.connect() as connection:
        direct = await DirectConnection.under(connection)
        await direct.write([(_INSERT, _values("direct.6"))])
        with pytest.raises(IntegrityError):
            await direct.write([(_INSERT, _values("direct.7")), (_INSERT, _values("direct.6"))])
        # The failed write left no transaction open: the next one commits on its own.
        await direct.write([(_INSERT, _values("direct.8"))])
        await connection.invalidate()

    async with database.sessions() as session:
        stored = (await session.scalars(select(Call.channel_id).where(Call.channel_id.like("direct.%")))).all()
    assert sorted(stored) == ["direct.6", "direct.8"]


async def test_direct_write_error_names_failed_statement(database):
    update_call = update(_CALLS).where(_CALLS.c.id == bindparam("row_id"))
    changes = {"row_id": 0, "outcome": "busy", "updated_at": datetime(2026, 12, 5, tzinfo=timezone.utc)}
    async with database.engine.connect() as connection:
        direct = await DirectConnection.under(connection)
        await direct.write([(_INSERT, _values("direct.9"))])
        with pytest.raises(IntegrityError) as raised:
            await direct.write([(_INSERT, _values("direct.9")), (update_call, changes)])
        await connection.invalidate()

    assert raised.value.statement.startswith("INSERT INTO calls")
