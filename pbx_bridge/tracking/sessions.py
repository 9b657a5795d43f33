"""Visitor sessions: start or resume one, choose the number it shows, keep its lease alive."""

from __future__ import annotations

import enum
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, bindparam, insert, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

import models
from pbx_bridge.storage import Database
from pbx_bridge.tracking import leasing
from pbx_bridge.tracking.batching import Batcher, padded
from pbx_bridge.tracking.classify import classify_source
from pbx_bridge.tracking.sites import PoolSettings, SiteDirectory, SiteSettings
from pbx_bridge.tracking.visitor import VisitorData

log = logging.getLogger("pbx_bridge.tracking")

_VISITOR = models.VisitorSession


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


@dataclass(frozen=True)
class StartRequest:
    site: SiteSettings
    data: VisitorData
    source_id: int | None
    ip: str | None
    now: datetime


@dataclass(frozen=True)
class Heartbeat:
    site: SiteSettings
    session_id: int
    visitor_id: str
    now: datetime


class TrackingService:
    """Session start, heartbeat and leave for the public tracking endpoints.

    Starts and heartbeats that arrive together are written in one transaction (see batching.py);
    each caller still gets its own result.
    """

    def __init__(self, database: Database, sites: SiteDirectory) -> None:
        self.database = database
        self.sites = sites
        # Pool id -> (monotonic time of the last warning, exhaustions since then).
        self._exhaustion_log: dict[int, tuple[float, int]] = {}
        # SQLite runs one write transaction at a time, so a second batch would only wait for
        # the lock; PostgreSQL builds one batch's statements while the other's run.
        concurrency = 1 if database.is_sqlite else 2
        self._starts = Batcher(
            "session starts",
            self._start_batch,
            # A visitor's second start must see the session the first one wrote.
            # Across processes, PostgreSQL's advisory locks do it (see _start_site). NOTE: on
            # SQLite two processes can still start two sessions for one visitor at one moment,
            # both first visits, each holding a pool number.
            key=lambda request: (request.site.site_id, request.data.visitor_id),
            concurrency=concurrency,
        )
        self._heartbeats = Batcher("heartbeats", self._heartbeat_batch, concurrency=concurrency)

    async def close(self) -> None:
        """Wait for the starts and heartbeats in progress; call before closing the database."""
        await self._starts.close()
        await self._heartbeats.close()
        await self.sites.close()

    async def start(
        self, site: SiteSettings, data: VisitorData, ip: str | None, now: datetime
    ) -> StartedSession:
        """Resume the visitor's session if it still holds its pool number, else start one.

        A new session shows a pool number when its source is dynamic and the site has a pool,
        the source's static number when it has one, and the site's default number otherwise.
        """
        source_id = classify_source(site, data)
        return await self._starts.submit(StartRequest(site, data, source_id, ip, now))

    async def heartbeat(
        self, site: SiteSettings, session_id: int, visitor_id: str, now: datetime
    ) -> bool:
        """Keep the session's lease alive; returns False when it holds no number any more."""
        if site.pool is None:
            return False
        return await self._heartbeats.submit(Heartbeat(site, session_id, visitor_id, now))

    async def leave(self, site: SiteSettings, session_id: int, visitor_id: str, now: datetime) -> bool:
        """Start the hold time of the session's number; returns False when it holds none."""
        if site.pool is None:
            return False
        async with self.database.engine.begin() as connection:
            return await leasing.release_hold(
                connection, site.pool, site.site_id, session_id, visitor_id, now
            )

    async def _start_batch(self, requests: list[StartRequest]) -> list[StartedSession]:
        results: dict[int, StartedSession] = {}
        # A Core connection, not an ORM session: these statements need no unit of work, and
        # the ORM's bookkeeping per statement cost about a fifth of a batch.
        async with self.database.engine.begin() as connection:
            for group in _by_site(requests):
                started = await self._start_site(connection, [request for _, request in group])
                results.update(zip((index for index, _ in group), started))
        return [results[index] for index in range(len(requests))]

    async def _start_site(
        self, connection: AsyncConnection, requests: list[StartRequest]
    ) -> list[StartedSession]:
        """Start or resume the sessions of one site's visitors, all different."""
        site = requests[0].site
        # Requests of one batch arrived together, so the batch's latest request time serves
        # as `now` for every hold it computes.
        now = max(request.now for request in requests)
        visitor_ids = [request.data.visitor_id for request in requests]
        if not self.database.is_sqlite:
            # Another process may be starting one of these visitors right now. Its transaction
            # keeps the visitor's lock until it commits, so the lookup below reads its session.
            await connection.execute(
                _LOCK_VISITORS_POSTGRES, {"site_id": site.site_id, "visitor_ids": visitor_ids}
            )
        previous = await _latest_sessions(connection, site.site_id, visitor_ids)

        resumed: dict[int, leasing.LeasedNumber] = {}
        if previous and site.pool is not None:
            resumed = await leasing.resume_held_numbers(
                connection, site.pool, [row.id for row in previous.values()], now
            )
            if resumed:
                await connection.execute(
                    update(models.VisitorSession)
                    .where(models.VisitorSession.id.in_(padded(list(resumed))))
                    .values(last_seen_at=now)
                )

        results: list[StartedSession | None] = [None] * len(requests)
        new: list[int] = []
        for index, request in enumerate(requests):
            prior = previous.get(request.data.visitor_id)
            held = resumed.get(prior.id) if prior is not None else None
            if held is None:
                new.append(index)
                continue
            results[index] = StartedSession(
                session_id=prior.id,
                source_id=prior.source_id,
                number=held.number,
                kind=NumberKind.POOL,
                first_visit=False,
                resumed=True,
                heartbeat_interval=site.pool.heartbeat_interval,
            )

        if new:
            rows = [
                _session_columns(requests[i], first_visit=requests[i].data.visitor_id not in previous)
                for i in new
            ]
            session_ids = await _insert_sessions(connection, rows)
            numbers = await self._choose_numbers(
                connection, site, [requests[i] for i in new], session_ids, now
            )
            for i, session_id, (number, kind, heartbeat) in zip(new, session_ids, numbers):
                results[i] = StartedSession(
                    session_id=session_id,
                    source_id=requests[i].source_id,
                    number=number,
                    kind=kind,
                    first_visit=requests[i].data.visitor_id not in previous,
                    resumed=False,
                    heartbeat_interval=heartbeat,
                )
        return results

    async def _choose_numbers(
        self,
        connection: AsyncConnection,
        site: SiteSettings,
        requests: list[StartRequest],
        session_ids: list[int],
        now: datetime,
    ) -> list[tuple[str | None, NumberKind, int | None]]:
        """Pick the number each new session shows, in order: (number, kind, heartbeat interval)."""
        dynamic_sources = {rule.source_id for rule in site.rules if rule.dynamic}
        chosen: dict[int, tuple[str | None, NumberKind, int | None]] = {}
        claimers: list[int] = []
        for request, session_id in zip(requests, session_ids):
            if site.pool is not None and request.source_id in dynamic_sources:
                claimers.append(session_id)
            elif request.source_id is not None and request.source_id in site.static_numbers:
                chosen[session_id] = (site.static_numbers[request.source_id], NumberKind.STATIC, None)
            else:
                chosen[session_id] = (site.default_number, NumberKind.DEFAULT, None)

        if claimers:
            pool = site.pool
            leased = await leasing.claim_free_numbers(connection, pool, claimers, now)
            for lease in leased:
                chosen[lease.session_id] = (lease.number, NumberKind.POOL, pool.heartbeat_interval)
            exhausted = [session_id for session_id in claimers if session_id not in chosen]
            if exhausted:
                await self._apply_exhaustion(
                    connection, pool, exhausted, now, chosen, site.default_number,
                    leased=[lease.number_id for lease in leased],
                )
        return [chosen[session_id] for session_id in session_ids]

    async def _apply_exhaustion(
        self,
        connection: AsyncConnection,
        pool: PoolSettings,
        session_ids: list[int],
        now: datetime,
        chosen: dict[int, tuple[str | None, NumberKind, int | None]],
        default_number: str | None,
        *,
        leased: list[int],
    ) -> None:
        """Record that these sessions found the pool exhausted and apply the pool's policy.

        `leased` are the numbers this batch has just given out: reusing one would take it back
        from a visitor whose response named it theirs.
        """
        # One multi-row INSERT, as leasing._claim does it.
        await connection.execute(
            insert(models.PoolExhaustion.__table__).returning(models.PoolExhaustion.id),
            [
                {
                    "pool_id": pool.pool_id,
                    "session_id": session_id,
                    "occurred_at": now,
                    "policy": pool.exhausted_policy.value,
                }
                for session_id in session_ids
            ],
        )
        self._log_exhaustion(pool.pool_id, pool.exhausted_policy, len(session_ids))
        if pool.exhausted_policy is models.ExhaustedPolicy.REUSE:
            reused = await leasing.claim_reused_numbers(connection, pool, session_ids, now, keep=leased)
            for lease in reused:
                chosen[lease.session_id] = (lease.number, NumberKind.POOL_REUSED, pool.heartbeat_interval)
        for session_id in session_ids:
            chosen.setdefault(session_id, (default_number, NumberKind.DEFAULT, None))

    async def _heartbeat_batch(self, beats: list[Heartbeat]) -> list[bool]:
        # (site id, session id, visitor id) of each heartbeat whose session still has a number.
        # A heartbeat that names another visitor's session, or another site's, is not among
        # them, even when the owner's own heartbeat shares the batch.
        held: set[tuple[int, int, str]] = set()
        async with self.database.engine.connect() as connection:
            if not self.database.is_sqlite:
                # Each site's heartbeats are one statement there (leasing.extend_holds), atomic
                # on its own, so the batch needs no BEGIN and COMMIT round trips.
                await connection.execution_options(isolation_level="AUTOCOMMIT")
            async with connection.begin():
                for group in _by_site(beats):
                    site = group[0][1].site
                    pairs = await leasing.extend_holds(
                        connection,
                        site.pool,
                        site.site_id,
                        [(beat.session_id, beat.visitor_id) for _, beat in group],
                        max(beat.now for _, beat in group),
                    )
                    held |= {(site.site_id, session_id, visitor_id) for session_id, visitor_id in pairs}
        return [(beat.site.site_id, beat.session_id, beat.visitor_id) in held for beat in beats]

    def _log_exhaustion(self, pool_id: int, policy: models.ExhaustedPolicy, times: int) -> None:
        # One warning per pool a minute: an exhausted pool under load would flood the log.
        now = time.monotonic()
        last_logged, count = self._exhaustion_log.get(pool_id, (0.0, 0))
        count += times
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


def _by_site(items: list) -> list[list[tuple[int, Any]]]:
    """Group (position, item) pairs by the item's site, keeping the order within each group."""
    groups: dict[int, list[tuple[int, Any]]] = {}
    for index, item in enumerate(items):
        groups.setdefault(item.site.site_id, []).append((index, item))
    return list(groups.values())


async def _latest_sessions(
    connection: AsyncConnection, site_id: int, visitor_ids: list[str]
) -> dict[str, Any]:
    """Return each visitor's latest session (id, source_id) by visitor id; new visitors are left out."""
    if connection.dialect.name == "postgresql":
        statement, visitors = _LATEST_SESSIONS_POSTGRES, visitor_ids
    else:
        statement, visitors = _LATEST_SESSIONS_SQLITE, json.dumps(visitor_ids)
    rows = await connection.execute(statement, {"site_id": site_id, "visitor_ids": visitors})
    return {row.visitor_id: row for row in rows}


# One statement for any number of visitors, whose ids arrive as one parameter: an array on
# PostgreSQL, a JSON array on SQLite. Each visitor costs one entry of the (site_id, visitor_id,
# started_at, id) index, however many sessions the visitor has had. (A UNION of one lookup per
# visitor cost PostgreSQL 40-300 ms of planning for 200 visitors.) On PostgreSQL the LATERAL
# subquery reads the session's row itself. A join back to visitor_sessions by id ran as a hash
# join over the whole table when its generic plan was made while the table was small.
_LATEST_SESSIONS_POSTGRES = text(
    """
    SELECT visit.id, visitor.visitor_id, visit.source_id
    FROM unnest(:visitor_ids) AS visitor (visitor_id)
    CROSS JOIN LATERAL (
        SELECT latest.id, latest.source_id FROM visitor_sessions AS latest
        WHERE latest.site_id = :site_id AND latest.visitor_id = visitor.visitor_id
        ORDER BY latest.started_at DESC, latest.id DESC
        LIMIT 1
    ) AS visit
    """
).bindparams(bindparam("visitor_ids", type_=ARRAY(String)), bindparam("site_id", type_=Integer))

# A transaction-scoped advisory lock per visitor, taken in one order (visitor id) so that two
# batches with visitors in common wait for each other instead of deadlocking.
_LOCK_VISITORS_POSTGRES = text(
    """
    SELECT pg_advisory_xact_lock(hashtextextended(:site_id || ':' || visitor_id, 0))
    FROM (SELECT DISTINCT unnest(:visitor_ids) AS visitor_id ORDER BY 1) AS visitor
    """
).bindparams(bindparam("visitor_ids", type_=ARRAY(String)), bindparam("site_id", type_=Integer))

_LATEST_SESSIONS_SQLITE = text(
    """
    SELECT visit.id, visit.visitor_id, visit.source_id
    FROM json_each(:visitor_ids) AS visitor
    JOIN visitor_sessions AS visit ON visit.id = (
        SELECT latest.id FROM visitor_sessions AS latest
        WHERE latest.site_id = :site_id AND latest.visitor_id = visitor.value
        ORDER BY latest.started_at DESC, latest.id DESC
        LIMIT 1
    )
    """
)


async def _insert_sessions(connection: AsyncConnection, rows: list[dict[str, object]]) -> list[int]:
    """Insert the sessions in one statement and return their ids in the order of `rows`."""
    inserted = await connection.execute(
        insert(_VISITOR.__table__).returning(_VISITOR.id, _VISITOR.visitor_id), rows
    )
    # Visitor ids are unique within one site's batch, so they tell the rows apart.
    ids = {row.visitor_id: row.id for row in inserted}
    return [ids[row["visitor_id"]] for row in rows]


def _session_columns(request: StartRequest, *, first_visit: bool) -> dict[str, object]:
    data = request.data
    return {
        "site_id": request.site.site_id,
        "visitor_id": data.visitor_id,
        "first_visit": first_visit,
        "source_id": request.source_id,
        **data.tags,
        "referrer": data.referrer,
        "referrer_host": data.referrer_host,
        "landing_page": data.landing_page,
        "search_phrase": data.search_phrase,
        "device_type": data.device_type,
        "browser": data.browser,
        "os": data.os,
        "user_agent": data.user_agent,
        "ip": request.ip,
        "started_at": request.now,
        "last_seen_at": request.now,
    }
