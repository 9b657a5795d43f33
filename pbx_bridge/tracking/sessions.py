"""Visitor sessions: start or resume one, choose the number it shows, keep its lease alive."""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update

import models
from pbx_bridge.storage import Database
from pbx_bridge.tracking import leasing
from pbx_bridge.tracking.classify import classify_source
from pbx_bridge.tracking.sites import SiteDirectory, SiteSettings
from pbx_bridge.tracking.visitor import VisitorData

log = logging.getLogger("pbx_bridge.tracking")


class NumberKind(str, enum.Enum):
    """Reason the session shows its number."""

    POOL = "pool"
    POOL_REUSED = "pool-reused"
    STATIC = "static"
    DEFAULT = "default"


@dataclass(frozen=True)
class StartedSession:
    session_id: int
    source_id: int | None
    number: str | None
    kind: NumberKind
    first_visit: bool
    resumed: bool
    # Seconds between heartbeats, or None when the session holds no pool number.
    heartbeat_interval: int | None


class TrackingService:
    """Session start, heartbeat and leave for the public tracking endpoints."""

    def __init__(self, database: Database, sites: SiteDirectory) -> None:
        self.database = database
        self.sites = sites
        # Pool id -> (monotonic time of the last warning, exhaustions since then).
        self._exhaustion_log: dict[int, tuple[float, int]] = {}

    async def start(
        self, site: SiteSettings, data: VisitorData, ip: str | None, now: datetime
    ) -> StartedSession:
        """Resume the visitor's session if it still holds its pool number, else start one.

        A new session shows a pool number when its source is dynamic and the site has a pool,
        the source's static number when it has one, and the site's default number otherwise.
        """
        source_id = classify_source(site, data)
        async with self.database.transaction() as session:
            previous_id = (
                await session.execute(
                    select(models.VisitorSession.id)
                    .where(
                        models.VisitorSession.site_id == site.site_id,
                        models.VisitorSession.visitor_id == data.visitor_id,
                    )
                    .order_by(models.VisitorSession.started_at.desc(), models.VisitorSession.id.desc())
                    .limit(1)
                )
            ).scalar_one_or_none()

            if previous_id is not None and site.pool is not None:
                held = await leasing.resume_held_number(session, site.pool, previous_id, now)
                if held is not None:
                    await session.execute(
                        update(models.VisitorSession)
                        .where(models.VisitorSession.id == previous_id)
                        .values(last_seen_at=now)
                    )
                    stored_source_id = (
                        await session.execute(
                            select(models.VisitorSession.source_id).where(
                                models.VisitorSession.id == previous_id
                            )
                        )
                    ).scalar_one()
                    return StartedSession(
                        session_id=previous_id,
                        source_id=stored_source_id,
                        number=held.number,
                        kind=NumberKind.POOL,
                        first_visit=False,
                        resumed=True,
                        heartbeat_interval=site.pool.heartbeat_interval,
                    )

            session_id = (
                await session.execute(
                    insert(models.VisitorSession)
                    .values(**_session_columns(site, data, source_id, ip, now, previous_id is None))
                    .returning(models.VisitorSession.id)
                )
            ).scalar_one()

            number, kind, heartbeat = await self._choose_number(session, site, source_id, session_id, now)
            return StartedSession(
                session_id=session_id,
                source_id=source_id,
                number=number,
                kind=kind,
                first_visit=previous_id is None,
                resumed=False,
                heartbeat_interval=heartbeat,
            )

    async def heartbeat(
        self, site: SiteSettings, session_id: int, visitor_id: str, now: datetime
    ) -> bool:
        """Keep the session's lease alive; returns False when it holds no number any more."""
        if site.pool is None:
            return False
        async with self.database.transaction() as session:
            return await leasing.extend_hold(
                session, site.pool, site.site_id, session_id, visitor_id, now
            )

    async def leave(self, site: SiteSettings, session_id: int, visitor_id: str, now: datetime) -> bool:
        """Start the hold time of the session's number; returns False when it holds none."""
        if site.pool is None:
            return False
        async with self.database.transaction() as session:
            return await leasing.release_hold(
                session, site.pool, site.site_id, session_id, visitor_id, now
            )

    async def _choose_number(
        self, session, site: SiteSettings, source_id: int | None, session_id: int, now: datetime
    ) -> tuple[str | None, NumberKind, int | None]:
        dynamic = any(rule.dynamic for rule in site.rules if rule.source_id == source_id)
        if dynamic and site.pool is not None:
            pool = site.pool
            leased = await leasing.claim_free_number(session, pool, session_id, now)
            if leased is not None:
                return leased.number, NumberKind.POOL, pool.heartbeat_interval

            await session.execute(
                insert(models.PoolExhaustion).values(
                    pool_id=pool.pool_id,
                    session_id=session_id,
                    occurred_at=now,
                    policy=pool.exhausted_policy.value,
                )
            )
            self._log_exhaustion(pool.pool_id, pool.exhausted_policy)
            if pool.exhausted_policy is models.ExhaustedPolicy.REUSE:
                leased = await leasing.claim_reused_number(session, pool, session_id, now)
                if leased is not None:
                    return leased.number, NumberKind.POOL_REUSED, pool.heartbeat_interval
            return site.default_number, NumberKind.DEFAULT, None

        if source_id is not None and source_id in site.static_numbers:
            return site.static_numbers[source_id], NumberKind.STATIC, None
        return site.default_number, NumberKind.DEFAULT, None


    def _log_exhaustion(self, pool_id: int, policy: models.ExhaustedPolicy) -> None:
        # One warning per pool a minute: an exhausted pool under load would flood the log.
        now = time.monotonic()
        last_logged, count = self._exhaustion_log.get(pool_id, (0.0, 0))
        count += 1
        if now - last_logged < 60:
            self._exhaustion_log[pool_id] = (last_logged, count)
            return
        log.warning(
            "pool %s exhausted %s times since the last warning, applying policy %s",
            pool_id,
            count,
            policy.value,
        )
        self._exhaustion_log[pool_id] = (now, 0)


def _session_columns(
    site: SiteSettings,
    data: VisitorData,
    source_id: int | None,
    ip: str | None,
    now: datetime,
    first_visit: bool,
) -> dict[str, object]:
    return {
        "site_id": site.site_id,
        "visitor_id": data.visitor_id,
        "first_visit": first_visit,
        "source_id": source_id,
        **data.tags,
        "referrer": data.referrer,
        "referrer_host": data.referrer_host,
        "landing_page": data.landing_page,
        "search_phrase": data.search_phrase,
        "device_type": data.device_type,
        "browser": data.browser,
        "os": data.os,
        "user_agent": data.user_agent,
        "ip": ip,
        "started_at": now,
        "last_seen_at": now,
    }
