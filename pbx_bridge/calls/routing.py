"""Routing of a dialed number: its company's hunt list and the call's attribution."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import selectinload

from models import Attribution, Company, NumberMode, NumberState, Site, TrackingNumber
from pbx_bridge.config import CallsConfig
from pbx_bridge.phones import InvalidNumber, to_e164
from pbx_bridge.tracking.attribution import attribute_pool_call


@dataclass(frozen=True)
class Destination:
    endpoint: str
    ring_timeout: int


@dataclass(frozen=True)
class Route:
    """The destinations to dial for one inbound call, in order, and the call's attribution."""

    dialed_number: str | None
    attribution: Attribution
    destinations: tuple[Destination, ...]
    company_id: int | None = None
    tracking_number_id: int | None = None
    source_id: int | None = None
    session_id: int | None = None
    record: bool = True
    tags: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class _NumberSettings:
    """Settings of one tracking number as stored, apart from pool attribution."""

    number_id: int
    pool_id: int | None
    company_id: int
    destinations: tuple[Destination, ...]
    record: bool
    attribution: Attribution
    source_id: int | None
    retired: bool


class Router:
    """Resolves dialed numbers to routes, keeping number settings for `calls.route_cache_seconds`.

    The cache spares every call the same three look-ups; a change made by `pbx-bridge load` or
    the admin API reaches running calls within that many seconds. Pool attribution is never
    cached: it depends on the moment of the call.
    """

    def __init__(self, calls: CallsConfig) -> None:
        self.calls = calls
        self._cache: dict[str, tuple[float, _NumberSettings | None]] = {}

    async def resolve(
        self,
        transaction: Callable[[], AbstractAsyncContextManager[AsyncConnection]],
        dialed_raw: str,
        at: datetime,
    ) -> Route:
        """Return the route of a dialed number.

        `transaction` opens a connection in a transaction. It is used only for look-ups that miss
        the cache and for pool attribution.
        """
        try:
            dialed = to_e164(dialed_raw, self.calls.default_region)
        except InvalidNumber:
            return self._unknown_number_route(None)

        settings = await self._settings(transaction, dialed)
        if settings is None:
            return self._unknown_number_route(dialed)

        attribution, source_id, session_id = settings.attribution, settings.source_id, None
        if settings.pool_id is not None:
            async with transaction() as connection, AsyncSession(bind=connection) as session:
                result = await attribute_pool_call(
                    session, TrackingNumber(id=settings.number_id, pool_id=settings.pool_id), at
                )
            attribution, source_id, session_id = result.kind, result.source_id, result.session_id
        return Route(
            dialed_number=dialed,
            attribution=attribution,
            destinations=settings.destinations or self._default_destinations(),
            company_id=settings.company_id,
            tracking_number_id=settings.number_id,
            source_id=source_id,
            session_id=session_id,
            record=settings.record,
            tags=("retired-number",) if settings.retired else (),
        )

    async def _settings(
        self, transaction: Callable[[], AbstractAsyncContextManager[AsyncConnection]], dialed: str
    ) -> _NumberSettings | None:
        now = time.monotonic()
        cached = self._cache.get(dialed)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with transaction() as connection, AsyncSession(bind=connection) as session:
            settings = await _load_settings(session, dialed)
        if self.calls.route_cache_seconds > 0:
            self._cache[dialed] = (now + self.calls.route_cache_seconds, settings)
        return settings

    def clear_cache(self) -> None:
        """Forget every number's settings, so that the next call reads them again."""
        self._cache.clear()

    def _default_destinations(self) -> tuple[Destination, ...]:
        if not self.calls.default_destination:
            return ()
        return (Destination(self.calls.default_destination, self.calls.ring_timeout),)

    def _unknown_number_route(self, dialed: str | None) -> Route:
        return Route(
            dialed_number=dialed,
            attribution=Attribution.UNKNOWN_NUMBER,
            destinations=self._default_destinations(),
        )


async def _load_settings(session: AsyncSession, dialed: str) -> _NumberSettings | None:
    number = await session.scalar(
        select(TrackingNumber)
        .where(TrackingNumber.number == dialed)
        .options(selectinload(TrackingNumber.company).selectinload(Company.destinations))
    )
    if number is None:
        return None

    company = number.company
    attribution, source_id = Attribution.STATIC, number.source_id
    if number.mode == NumberMode.POOL.value:
        attribution = Attribution.POOL_UNMATCHED
    else:
        site = await session.scalar(select(Site).where(Site.default_number_id == number.id).limit(1))
        if site is not None:
            attribution, source_id = Attribution.DEFAULT, number.source_id or site.default_source_id
    return _NumberSettings(
        number_id=number.id,
        pool_id=number.pool_id if number.mode == NumberMode.POOL.value else None,
        company_id=company.id,
        destinations=tuple(
            Destination(d.endpoint, d.ring_timeout or company.ring_timeout)
            for d in company.destinations
        ),
        record=company.recording,
        attribution=attribution,
        source_id=source_id,
        retired=number.state == NumberState.RETIRED.value,
    )
