"""Tracking settings of a site, read by site key and cached briefly for the public endpoints."""

from __future__ import annotations

import asyncio
import time
from functools import lru_cache
from dataclasses import dataclass, field

import phonenumbers
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

import models
from pbx_bridge.storage import Database


@dataclass(frozen=True)
class SourceRule:
    """A source and the session values it matches; None fields match anything."""

    source_id: int
    dynamic: bool
    utm_source: str | None
    utm_medium: str | None
    utm_campaign: str | None
    referrer_host: str | None


@dataclass(frozen=True)
class PoolSettings:
    pool_id: int
    hold_time: int
    heartbeat_interval: int
    exhausted_policy: models.ExhaustedPolicy


@dataclass(frozen=True)
class SiteSettings:
    site_id: int
    site_key: str
    allowed_origins: frozenset[str]
    display_format: str | None
    default_number: str | None
    direct_source_id: int | None
    default_source_id: int | None
    # Ordered by priority, then id: the first match wins.
    rules: tuple[SourceRule, ...]
    # Static numbers by source id.
    static_numbers: dict[int, str] = field(default_factory=dict)
    pool: PoolSettings | None = None


class SiteDirectory:
    """Reads site settings by site key, keeping each for `ttl` seconds.

    Settings changed in the admin API reach the public endpoints within `ttl`; a site key that
    is not found is cached too, so a flood of requests with a bad key costs one query per `ttl`.
    """

    def __init__(self, database: Database, ttl: float) -> None:
        self.database = database
        self.ttl = ttl
        self._cache: dict[str, tuple[float, SiteSettings | None]] = {}
        # Loads in progress by site key. When a busy site's entry expires, hundreds of requests
        # miss it at once, and they all wait for one load. Each running its own five queries
        # stalled every request for about half a second under the tracking benchmark.
        self._loading: dict[str, asyncio.Future[SiteSettings | None]] = {}

    async def get(self, site_key: str) -> SiteSettings | None:
        cached = self._cache.get(site_key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]

        loading = self._loading.get(site_key)
        if loading is None:
            loading = asyncio.ensure_future(self._load(site_key))
            self._loading[site_key] = loading
        # Shielded, so that a request that goes away does not cancel the others' load.
        return await asyncio.shield(loading)

    async def close(self) -> None:
        """Wait for the loads in progress."""
        await asyncio.gather(*self._loading.values(), return_exceptions=True)

    async def _load(self, site_key: str) -> SiteSettings | None:
        try:
            async with self.database.sessions() as session:
                settings = await load_site_settings(session, site_key)
        finally:
            del self._loading[site_key]
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[site_key] = (time.monotonic() + self.ttl, settings)
        return settings


async def load_site_settings(session: AsyncSession, site_key: str) -> SiteSettings | None:
    site = (
        await session.execute(select(models.Site).where(models.Site.site_key == site_key))
    ).scalar_one_or_none()
    if site is None:
        return None

    default_number = None
    if site.default_number_id is not None:
        default_number = (
            await session.execute(
                select(models.TrackingNumber.number).where(
                    models.TrackingNumber.id == site.default_number_id
                )
            )
        ).scalar_one_or_none()

    sources = (
        await session.execute(
            select(models.Source)
            .where(models.Source.company_id == site.company_id)
            .order_by(models.Source.priority, models.Source.id)
        )
    ).scalars()
    rules = tuple(
        SourceRule(
            source_id=source.id,
            dynamic=source.dynamic,
            utm_source=_lowered(source.match_utm_source),
            utm_medium=_lowered(source.match_utm_medium),
            utm_campaign=_lowered(source.match_utm_campaign),
            referrer_host=_lowered(source.match_referrer_host),
        )
        for source in sources
    )

    static_rows = await session.execute(
        select(models.TrackingNumber.source_id, models.TrackingNumber.number)
        .where(
            models.TrackingNumber.company_id == site.company_id,
            models.TrackingNumber.mode == models.NumberMode.STATIC.value,
            models.TrackingNumber.state == models.NumberState.ACTIVE.value,
            models.TrackingNumber.source_id.is_not(None),
        )
        .order_by(models.TrackingNumber.id)
    )
    static_numbers: dict[int, str] = {}
    for source_id, number in static_rows:
        static_numbers.setdefault(source_id, number)

    # NOTE: a site with several pools uses the one created first; sources name no pool yet.
    pool = (
        await session.execute(
            select(models.NumberPool)
            .where(models.NumberPool.site_id == site.id)
            .order_by(models.NumberPool.id)
            .limit(1)
        )
    ).scalar_one_or_none()

    return SiteSettings(
        site_id=site.id,
        site_key=site.site_key,
        allowed_origins=frozenset(origin.rstrip("/").lower() for origin in site.allowed_origins),
        display_format=site.display_format,
        default_number=default_number,
        direct_source_id=site.direct_source_id,
        default_source_id=site.default_source_id,
        rules=rules,
        static_numbers=static_numbers,
        pool=None
        if pool is None
        else PoolSettings(
            pool_id=pool.id,
            hold_time=pool.hold_time,
            heartbeat_interval=pool.heartbeat_interval,
            exhausted_policy=models.ExhaustedPolicy(pool.exhausted_policy),
        ),
    )


@lru_cache(maxsize=4096)
def display_number(e164: str, display_format: str | None) -> str:
    """Write `e164` in the site's format, where each X takes the next of the number's last
    digits ("+7 (XXX) XXX-XX-XX"); without a format, the international form."""
    if display_format and "X" in display_format:
        digits = [ch for ch in e164 if ch.isdigit()]
        slots = display_format.count("X")
        if slots <= len(digits):
            remaining = iter(digits[len(digits) - slots :])
            return "".join(next(remaining) if ch == "X" else ch for ch in display_format)
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


@lru_cache(maxsize=4096)
def number_parts(e164: str) -> dict[str, str]:
    """Split a number for the page snippet, which finds it in text written in national form
    ("8 (495) 111-00-01") or international form ("+7 495 111-00-01")."""
    parsed = phonenumbers.parse(e164, None)
    region = phonenumbers.region_code_for_number(parsed)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region) if region else None
    return {
        "e164": e164,
        "country_code": str(parsed.country_code),
        "national": phonenumbers.national_significant_number(parsed),
        "national_prefix": (metadata.national_prefix or "") if metadata else "",
    }


def _lowered(value: str | None) -> str | None:
    return value.strip().lower() if value and value.strip() else None
