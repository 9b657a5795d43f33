"""The call journal: one row per inbound call, and the recording of its bridge."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, CheckConstraint, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, UTCDateTime, utcnow


class Attribution(str, enum.Enum):
    STATIC = "static"
    POOL = "pool"
    POOL_AMBIGUOUS = "pool-ambiguous"
    POOL_UNMATCHED = "pool-unmatched"
    DEFAULT = "default"
    UNKNOWN_NUMBER = "unknown-number"


class Outcome(str, enum.Enum):
    IN_PROGRESS = "in-progress"
    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    ABANDONED = "abandoned"
    FAILED = "failed"


class HangupSide(str, enum.Enum):
    CALLER = "caller"
    COMPANY = "company"
    SYSTEM = "system"


class RecordingState(str, enum.Enum):
    QUEUED = "queued"
    RECORDING = "recording"
    DONE = "done"
    FAILED = "failed"


def _in(values: type[enum.Enum]) -> str:
    return "(" + ", ".join(f"'{v.value}'" for v in values) + ")"


class Call(Base):
    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Asterisk ids of the caller's channel (the call's key) and of the answered company leg.
    channel_id: Mapped[str] = mapped_column(String(64), unique=True)
    linkedid: Mapped[str | None] = mapped_column(String(64))
    outbound_channel_id: Mapped[str | None] = mapped_column(String(64))

    caller_number: Mapped[str | None] = mapped_column(String(16))
    caller_raw: Mapped[str] = mapped_column(String(200), default="")
    caller_name: Mapped[str | None] = mapped_column(String(200))
    dialed_number: Mapped[str | None] = mapped_column(String(16))
    dialed_raw: Mapped[str] = mapped_column(String(200), default="")

    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id", ondelete="SET NULL"))
    tracking_number_id: Mapped[int | None] = mapped_column(
        ForeignKey("tracking_numbers.id", ondelete="SET NULL")
    )
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="SET NULL"))
    session_id: Mapped[int | None] = mapped_column(
        ForeignKey("visitor_sessions.id", ondelete="SET NULL")
    )
    attribution: Mapped[str] = mapped_column(String(16))
    first_time_caller: Mapped[bool | None] = mapped_column()

    # Every destination tried, in order: [{"endpoint", "status", "at"}].
    attempts: Mapped[list[dict]] = mapped_column(JSON, default=list)
    answered_by: Mapped[str | None] = mapped_column(String(200))

    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Seconds; wait runs from the start to the answer (or the end when unanswered).
    wait_seconds: Mapped[float | None] = mapped_column(Float)
    talk_seconds: Mapped[float | None] = mapped_column(Float)

    outcome: Mapped[str] = mapped_column(String(16), default=Outcome.IN_PROGRESS.value)
    hangup_cause: Mapped[int | None] = mapped_column(Integer)
    hangup_cause_text: Mapped[str | None] = mapped_column(String(100))
    hangup_side: Mapped[str | None] = mapped_column(String(8))
    # What went wrong inside pbx-bridge, if anything (the caller was then sent to the fallback).
    error: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    recording: Mapped[Recording | None] = relationship(back_populates="call", uselist=False)

    __table_args__ = (
        Index(None, "started_at"),
        # The source, day and hour reports in pbx_bridge.reports read only these columns, so on
        # PostgreSQL they run as index-only scans once vacuum has marked the table's pages visible.
        Index(
            None,
            "company_id",
            "started_at",
            postgresql_include=["source_id", "caller_number", "first_time_caller", "outcome", "wait_seconds", "talk_seconds"],
        ),
        # Keeps each source's callers in order, so the source report counts distinct callers
        # without a sort.
        Index(None, "company_id", "source_id", "caller_number", "started_at"),
        Index(None, "source_id", "started_at"),
        Index(None, "caller_number", "company_id"),
        Index(None, "outcome"),
        CheckConstraint(f"attribution IN {_in(Attribution)}", name="attribution_valid"),
        CheckConstraint(f"outcome IN {_in(Outcome)}", name="outcome_valid"),
        CheckConstraint(
            f"hangup_side IS NULL OR hangup_side IN {_in(HangupSide)}", name="hangup_side_valid"
        ),
    )


class Recording(Base):
    """The recording of a call's bridge as Asterisk stores it under its recording folder."""

    __tablename__ = "recordings"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), unique=True)
    # Asterisk's recording name: a path relative to its recording folder, without extension.
    name: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default=RecordingState.QUEUED.value)
    duration_seconds: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    call: Mapped[Call] = relationship(back_populates="recording")

    __table_args__ = (
        CheckConstraint(f"state IN {_in(RecordingState)}", name="state_valid"),
    )

    @property
    def file_name(self) -> str:
        return f"{self.name}.{self.format}"
