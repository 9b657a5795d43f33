"""Where a dialed number goes: its company's hunt list and the call's attribution."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from models import Attribution, Company, NumberMode, NumberState, Site, TrackingNumber
from pbx_bridge.config import CallsConfig
from pbx_bridge.phones import InvalidNumber, to_e164


@dataclass(frozen=True)
class Destination:
    endpoint: str
    ring_timeout: int


@dataclass(frozen=True)
class Route:
    """The answer for one inbound call: what to dial, in order, and whom the call is attributed to."""

    dialed_number: str | None
    attribution: Attribution
    destinations: tuple[Destination, ...]
    company_id: int | None = None
    tracking_number_id: int | None = None
    source_id: int | None = None
    session_id: int | None = None
    record: bool = True
    tags: tuple[str, ...] = field(default_factory=tuple)


async def resolve_route(
    session: AsyncSession, dialed_raw: str, at: datetime, calls: CallsConfig
) -> Route:
    """Find the tracking number behind `dialed_raw` and the destinations to try."""
    try:
        dialed = to_e164(dialed_raw, calls.default_region)
    except InvalidNumber:
        dialed = None

    number = None
    if dialed is not None:
        number = await session.scalar(
            select(TrackingNumber)
            .where(TrackingNumber.number == dialed)
            .options(selectinload(TrackingNumber.company).selectinload(Company.destinations))
        )
    if number is None:
        return _unknown_number_route(dialed, calls)

    company = number.company
    destinations = tuple(
        Destination(d.endpoint, d.ring_timeout or company.ring_timeout) for d in company.destinations
    )
    if not destinations and calls.default_destination:
        destinations = (Destination(calls.default_destination, calls.ring_timeout),)
    tags = ("retired-number",) if number.state == NumberState.RETIRED.value else ()
    attribution, source_id, session_id = await _attribute(session, number, at)
    return Route(
        dialed_number=dialed,
        attribution=attribution,
        destinations=destinations,
        company_id=company.id,
        tracking_number_id=number.id,
        source_id=source_id,
        session_id=session_id,
        record=company.recording,
        tags=tags,
    )


def _unknown_number_route(dialed: str | None, calls: CallsConfig) -> Route:
    destinations = ()
    if calls.default_destination:
        destinations = (Destination(calls.default_destination, calls.ring_timeout),)
    return Route(dialed_number=dialed, attribution=Attribution.UNKNOWN_NUMBER, destinations=destinations)


async def _attribute(
    session: AsyncSession, number: TrackingNumber, at: datetime
) -> tuple[Attribution, int | None, int | None]:
    if number.mode == NumberMode.POOL.value:
        from pbx_bridge.tracking.attribution import attribute_pool_call

        result = await attribute_pool_call(session, number, at)
        return result.kind, result.source_id, result.session_id

    site = await session.scalar(select(Site).where(Site.default_number_id == number.id).limit(1))
    if site is not None:
        return Attribution.DEFAULT, number.source_id or site.default_source_id, None
    return Attribution.STATIC, number.source_id, None
