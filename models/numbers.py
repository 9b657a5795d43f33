"""Tracking numbers, number pools and the lease history of pool numbers."""

from __future__ import annotations

import enum
from datetime import datetime, timezone

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, UTCDateTime, utcnow
from models.company import Company, Site, Source


NEVER_HELD = datetime(1970, 1, 1, tzinfo=timezone.utc)


class NumberMode(str, enum.Enum):
    STATIC = "static"
    POOL = "pool"


class NumberState(str, enum.Enum):
    ACTIVE = "active"
    RETIRED = "retired"


class ExhaustedPolicy(str, enum.Enum):
    DEFAULT_NUMBER = "default-number"
    REUSE = "reuse"


class NumberPool(Base):
    __tablename__ = "number_pools"

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    # Seconds a number stays with a session after its last sign of life.
    hold_time: Mapped[int] = mapped_column(Integer, default=900)
    heartbeat_interval: Mapped[int] = mapped_column(Integer, default=30)
    exhausted_policy: Mapped[str] = mapped_column(
        String(16), default=ExhaustedPolicy.DEFAULT_NUMBER.value
    )

    site: Mapped[Site] = relationship()
    numbers: Mapped[list[TrackingNumber]] = relationship(back_populates="pool")

    __table_args__ = (
        UniqueConstraint("site_id", "name"),
        CheckConstraint("hold_time >= 0", name="hold_time_not_negative"),
        CheckConstraint("heartbeat_interval > 0", name="heartbeat_interval_positive"),
        CheckConstraint(
            "exhausted_policy IN ('default-number', 'reuse')", name="exhausted_policy_valid"
        ),
    )


class TrackingNumber(Base):
    """A substitute number in E.164, either static (one source) or in a pool."""

    __tablename__ = "tracking_numbers"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(16), unique=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    mode: Mapped[str] = mapped_column(String(8), default=NumberMode.STATIC.value)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="SET NULL"))
    pool_id: Mapped[int | None] = mapped_column(
        ForeignKey("number_pools.id", ondelete="SET NULL")
    )
    state: Mapped[str] = mapped_column(String(8), default=NumberState.ACTIVE.value)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Pool numbers only: the session holding the number and the end of its hold. Leasing claims a
    # number with one conditional UPDATE of these columns, which keeps allocation race-free.
    # A number that was never leased has held_until at the epoch. The column is NOT NULL, so
    # "free" is the plain range held_until < now, and the (pool_id, state, held_until, id) index
    # hands a claim the longest-free number without scanning or sorting the pool.
    held_by_session_id: Mapped[int | None] = mapped_column(Integer)
    held_until: Mapped[datetime] = mapped_column(UTCDateTime(), default=NEVER_HELD)

    company: Mapped[Company] = relationship()
    source: Mapped[Source | None] = relationship()
    pool: Mapped[NumberPool | None] = relationship(back_populates="numbers")

    __table_args__ = (
        CheckConstraint("mode IN ('static', 'pool')", name="mode_valid"),
        CheckConstraint("state IN ('active', 'retired')", name="state_valid"),
        CheckConstraint(
            "(mode = 'static' AND pool_id IS NULL) OR (mode = 'pool' AND source_id IS NULL)",
            name="mode_binding",
        ),
        Index(None, "pool_id"),
        Index(None, "held_by_session_id"),
        Index(None, "pool_id", "state", "held_until", "id"),
    )


class NumberLease(Base):
    """One lease of a pool number to a visitor session; rows are history and never rewritten
    except for last_seen_at and released_at of the live lease."""

    __tablename__ = "number_leases"

    id: Mapped[int] = mapped_column(primary_key=True)
    number_id: Mapped[int] = mapped_column(ForeignKey("tracking_numbers.id", ondelete="CASCADE"))
    session_id: Mapped[int] = mapped_column(
        ForeignKey("visitor_sessions.id", ondelete="CASCADE")
    )
    leased_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Set when an exhausted pool handed out a number another session still held.
    reused: Mapped[bool] = mapped_column(default=False)

    __table_args__ = (
        Index(None, "number_id", "leased_at"),
        Index(None, "session_id"),
    )


class PoolExhaustion(Base):
    """A visitor who found no free number in a pool, for pool sizing."""

    __tablename__ = "pool_exhaustions"

    id: Mapped[int] = mapped_column(primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("number_pools.id", ondelete="CASCADE"))
    session_id: Mapped[int | None] = mapped_column(
        ForeignKey("visitor_sessions.id", ondelete="SET NULL")
    )
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    policy: Mapped[str] = mapped_column(String(16))

    __table_args__ = (Index(None, "pool_id", "occurred_at"),)
