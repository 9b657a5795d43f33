"""Website visitor sessions that dynamic tracking attributes calls to."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class VisitorSession(Base):
    __tablename__ = "visitor_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    # First-party id the page snippet keeps in the visitor's browser.
    visitor_id: Mapped[str] = mapped_column(String(64))
    first_visit: Mapped[bool] = mapped_column(default=True)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="SET NULL"))

    utm_source: Mapped[str | None] = mapped_column(String(200))
    utm_medium: Mapped[str | None] = mapped_column(String(200))
    utm_campaign: Mapped[str | None] = mapped_column(String(200))
    utm_content: Mapped[str | None] = mapped_column(String(200))
    utm_term: Mapped[str | None] = mapped_column(String(200))
    gclid: Mapped[str | None] = mapped_column(String(200))
    yclid: Mapped[str | None] = mapped_column(String(200))
    fbclid: Mapped[str | None] = mapped_column(String(200))
    msclkid: Mapped[str | None] = mapped_column(String(200))
    ga_client_id: Mapped[str | None] = mapped_column(String(100))
    ym_client_id: Mapped[str | None] = mapped_column(String(100))

    referrer: Mapped[str | None] = mapped_column(Text)
    referrer_host: Mapped[str | None] = mapped_column(String(255))
    landing_page: Mapped[str | None] = mapped_column(Text)
    search_phrase: Mapped[str | None] = mapped_column(String(500))
    device_type: Mapped[str | None] = mapped_column(String(32))
    browser: Mapped[str | None] = mapped_column(String(64))
    os: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(Text)
    ip: Mapped[str | None] = mapped_column(String(45))

    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (Index(None, "site_id", "visitor_id", "started_at", "id"),)
