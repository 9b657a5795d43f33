"""People who use the admin API and the dashboard, and the tokens they authenticate with."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, UTCDateTime, utcnow


class Role(str, enum.Enum):
    # Manages every company, user and setting.
    ADMIN = "admin"
    # Reads the journal, reports and recordings of one company.
    VIEWER = "viewer"


class TokenKind(str, enum.Enum):
    # A long-lived token a script sends as "Authorization: Bearer ...".
    API = "api"
    # A dashboard login kept in a cookie; it expires.
    SESSION = "session"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    login: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    # Argon2id hash in PHC string form ($argon2id$v=19$...).
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(8), default=Role.VIEWER.value)
    # Viewers belong to one company; admins to none, because they see all of them.
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    # Language of the dashboard and of API messages when the request names none: "ru" or "en".
    language: Mapped[str] = mapped_column(String(2), default="ru")
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    tokens: Mapped[list[AccessToken]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )

    __table_args__ = (
        CheckConstraint("role IN ('admin', 'viewer')", name="role_valid"),
        CheckConstraint("language IN ('ru', 'en')", name="language_valid"),
        CheckConstraint(
            "(role = 'admin' AND company_id IS NULL) OR (role = 'viewer' AND company_id IS NOT NULL)",
            name="role_company",
        ),
    )


class AccessToken(Base):
    """An API token or a dashboard session; only the SHA-256 of the secret is stored."""

    __tablename__ = "access_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(8), default=TokenKind.API.value)
    name: Mapped[str] = mapped_column(String(200), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters of the secret, so a user can tell tokens apart in a list.
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship(back_populates="tokens")

    __table_args__ = (
        CheckConstraint("kind IN ('api', 'session')", name="kind_valid"),
        Index(None, "user_id"),
    )
