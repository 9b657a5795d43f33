"""Outbox of deliveries to receivers outside pbx-bridge, and the webhooks companies configure."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class Receiver(str, enum.Enum):
    WEBHOOK = "webhook"
    GA4 = "ga4"
    METRICA = "metrica"


class DeliveryState(str, enum.Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    # Given up after the configured time; kept for inspection and `pbx-bridge outbox retry`.
    DEAD = "dead"


class CallEvent(str, enum.Enum):
    STARTED = "call.started"
    ANSWERED = "call.answered"
    ENDED = "call.ended"


def _in(values: type[enum.Enum]) -> str:
    return "(" + ", ".join(f"'{v.value}'" for v in values) + ")"


class Webhook(Base):
    """A URL that receives a company's call events as signed JSON POST requests."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2000))
    # Key of the HMAC-SHA256 signature; configuration, never logged.
    secret: Mapped[str] = mapped_column(String(200))
    # Event names this webhook receives, a subset of CallEvent values.
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (UniqueConstraint("company_id", "url"),)


class Delivery(Base):
    """One message to one receiver, written in the transaction of the journal change it reports."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    receiver: Mapped[str] = mapped_column(String(16))
    event: Mapped[str] = mapped_column(String(32))
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id", ondelete="SET NULL"))
    webhook_id: Mapped[int | None] = mapped_column(ForeignKey("webhooks.id", ondelete="SET NULL"))
    # Where the row was addressed when it was written: webhook URL, GA4 measurement id or
    # Metrica counter id. GA4 and Metrica rows are sent with the configuration of the sender.
    target: Mapped[str] = mapped_column(String(2000))
    # Snapshot of the call data at the time of the event; receivers format it their own way.
    payload: Mapped[dict] = mapped_column(JSON)

    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Start of the give-up window: the creation time, or the time of a manual retry.
    pending_since: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # HTTP status and error text (with the receiver's response body) of the last failed attempt.
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    # Yandex Metrica upload id and its status as the upload response reported them.
    upload_id: Mapped[str | None] = mapped_column(String(64))
    upload_status: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index(None, "state", "next_attempt_at"),
        Index(None, "call_id"),
        CheckConstraint(f"receiver IN {_in(Receiver)}", name="receiver_valid"),
        CheckConstraint(f"state IN {_in(DeliveryState)}", name="state_valid"),
    )
