"""Companies, their hunt lists, websites and advertising sources."""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Date,
    ForeignKey,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, UTCDateTime, utcnow


class SourceKind(str, enum.Enum):
    OFFLINE = "offline"
    ONLINE = "online"


class Company(Base):
    __tablename__ = "companies"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    timezone: Mapped[str] = mapped_column(String(64), default="Europe/Moscow")
    # Seconds each destination rings unless the destination sets its own.
    ring_timeout: Mapped[int] = mapped_column(Integer, default=20)
    recording: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    destinations: Mapped[list[Destination]] = relationship(
        back_populates="company",
        order_by="Destination.position",
        cascade="all, delete-orphan",
    )
    sources: Mapped[list[Source]] = relationship(back_populates="company")
    sites: Mapped[list[Site]] = relationship(back_populates="company")

    __table_args__ = (CheckConstraint("ring_timeout > 0", name="ring_timeout_positive"),)


class Destination(Base):
    """One entry of a company's ordered hunt list: an Asterisk dial string."""

    __tablename__ = "destinations"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    endpoint: Mapped[str] = mapped_column(String(200))
    ring_timeout: Mapped[int | None] = mapped_column(Integer)

    company: Mapped[Company] = relationship(back_populates="destinations")

    __table_args__ = (UniqueConstraint("company_id", "position"),)


class Source(Base):
    """An advertising channel; online sources carry the rules that match a visitor session."""

    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16), default=SourceKind.OFFLINE.value)
    # Online sources whose sessions get a number from the site's pool (combined tracking).
    dynamic: Mapped[bool] = mapped_column(default=False)
    match_utm_source: Mapped[str | None] = mapped_column(String(200))
    match_utm_medium: Mapped[str | None] = mapped_column(String(200))
    match_utm_campaign: Mapped[str | None] = mapped_column(String(200))
    match_referrer_host: Mapped[str | None] = mapped_column(String(255))
    # Lower numbers are tried first when several sources match a session.
    priority: Mapped[int] = mapped_column(Integer, default=100)

    company: Mapped[Company] = relationship(back_populates="sources")
    spend: Mapped[list[SourceSpend]] = relationship(
        back_populates="source", cascade="all, delete-orphan"
    )

    __table_args__ = (
        UniqueConstraint("company_id", "name"),
        CheckConstraint("kind IN ('offline', 'online')", name="kind_valid"),
    )


class SourceSpend(Base):
    """Money spent on a source over a period, for cost per call."""

    __tablename__ = "source_spend"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    currency: Mapped[str] = mapped_column(String(3), default="RUB")

    source: Mapped[Source] = relationship(back_populates="spend")

    __table_args__ = (
        UniqueConstraint("source_id", "period_start"),
        CheckConstraint("period_end >= period_start", name="period_ordered"),
    )


class Site(Base):
    """A website of a company that shows tracking numbers to its visitors."""

    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    # Public key the page snippet sends; it identifies the site, it grants nothing.
    site_key: Mapped[str] = mapped_column(String(64), unique=True)
    allowed_origins: Mapped[list[str]] = mapped_column(JSON, default=list)
    default_number_id: Mapped[int | None] = mapped_column(
        ForeignKey("tracking_numbers.id", ondelete="SET NULL", use_alter=True)
    )
    # Sources for direct visits and for sessions no rule matches.
    direct_source_id: Mapped[int | None] = mapped_column(
        ForeignKey("sources.id", ondelete="SET NULL")
    )
    default_source_id: Mapped[int | None] = mapped_column(
        ForeignKey("sources.id", ondelete="SET NULL")
    )
    # How the page shows a number, e.g. "+7 (XXX) XXX-XX-XX"; X takes the next digit.
    display_format: Mapped[str | None] = mapped_column(String(64))

    company: Mapped[Company] = relationship(back_populates="sites")

    __table_args__ = (UniqueConstraint("company_id", "name"),)
