"""Apply a checked setup file to the database inside the caller's transaction.

Rows are matched by their natural keys (company name, source and site name within the company,
pool name within the site, number in E.164) and updated in place, so loading the same file
twice writes nothing. Rows the file no longer mentions are not deleted: numbers are retired,
because past calls refer to them, and sources, sites and pools are left as they are and reported.
Webhooks are the exception: a company with a webhooks key gets exactly the listed webhooks,
matched by URL. Outbox rows keep the URL they were addressed to, so deleting one loses no history.
"""

from __future__ import annotations

import logging
import secrets
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from models import (
    Company,
    Destination,
    NumberMode,
    NumberPool,
    NumberState,
    Site,
    Source,
    SourceSpend,
    TrackingNumber,
    Webhook,
)
from pbx_bridge.delivery.webhooks import replace_company_webhooks
from pbx_bridge.setup.schema import (
    CompanySpec,
    PoolSpec,
    Problem,
    SetupError,
    SetupSpec,
    SiteSpec,
    SourceSpec,
)

log = logging.getLogger("pbx_bridge.setup")

# Key of the PostgreSQL advisory lock that makes concurrent loads wait for each other.
_LOAD_LOCK_KEY = zlib.crc32(b"pbx-bridge setup load")
# 24 random bytes give a 32-character URL-safe key.
_SITE_KEY_BYTES = 24

KINDS = ("companies", "sources", "sites", "pools", "numbers", "webhooks")


@dataclass
class LoadReport:
    """Created, updated and unchanged row counts per kind, and the rows moved, retired or deleted."""

    created: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    unchanged: Counter[str] = field(default_factory=Counter)
    moved: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    # Webhook URLs deleted because the file no longer lists them, with their company.
    removed_webhooks: list[str] = field(default_factory=list)
    # Rows of the file's companies that the file no longer mentions and that were left as they are.
    left_alone: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(
            sum(self.created.values())
            or sum(self.updated.values())
            or self.retired
            or self.removed_webhooks
        )


async def apply_setup(session: AsyncSession, spec: SetupSpec) -> LoadReport:
    """Create or update every row the setup declares, retire the numbers it dropped and delete
    the webhooks it dropped.

    Raise SetupError, before writing anything, when the file conflicts with the database. The
    caller commits or rolls back.
    """
    if session.bind.dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOAD_LOCK_KEY})

    loader = _Loader(session, LoadReport())
    await loader.load_existing(spec)
    loader.check_site_keys(spec)

    for company_spec in spec.companies:
        loader.apply_company(company_spec)
    await session.flush()

    for company_spec in spec.companies:
        await loader.apply_webhooks(company_spec)

    for company_spec in spec.companies:
        loader.apply_sites(company_spec)
    await session.flush()

    for company_spec in spec.companies:
        loader.apply_pools(company_spec)
    await session.flush()

    loader.apply_numbers(spec)
    await session.flush()

    for company_spec in spec.companies:
        loader.apply_default_numbers(company_spec)
    await session.flush()
    return loader.report


@dataclass
class _Loader:
    session: AsyncSession
    report: LoadReport
    companies: dict[str, Company] = field(default_factory=dict)
    pools: dict[tuple[int, str], NumberPool] = field(default_factory=dict)
    numbers: dict[str, TrackingNumber] = field(default_factory=dict)
    sites_by_key: dict[str, Site] = field(default_factory=dict)
    # Whether each existing site changed so far, keyed by (company name, site name).
    changed_sites: dict[tuple[str, str], bool] = field(default_factory=dict)

    async def load_existing(self, spec: SetupSpec) -> None:
        names = [company.name for company in spec.companies]
        result = await self.session.execute(
            select(Company)
            .where(Company.name.in_(names))
            .options(
                selectinload(Company.destinations),
                selectinload(Company.sources).selectinload(Source.spend),
                selectinload(Company.sites),
            )
        )
        self.companies = {company.name: company for company in result.scalars()}

        site_ids = [site.id for company in self.companies.values() for site in company.sites]
        if site_ids:
            result = await self.session.execute(
                select(NumberPool).where(NumberPool.site_id.in_(site_ids))
            )
            self.pools = {(pool.site_id, pool.name): pool for pool in result.scalars()}

        company_ids = [company.id for company in self.companies.values()]
        result = await self.session.execute(
            select(TrackingNumber)
            .where(
                or_(
                    TrackingNumber.number.in_(spec.all_numbers),
                    TrackingNumber.company_id.in_(company_ids),
                )
            )
            .options(
                selectinload(TrackingNumber.company),
                selectinload(TrackingNumber.source),
                selectinload(TrackingNumber.pool).selectinload(NumberPool.site),
            )
        )
        self.numbers = {number.number: number for number in result.scalars()}

        site_keys = [
            site.site_key
            for company in spec.companies
            for site in company.sites
            if site.site_key is not None
        ]
        if site_keys:
            result = await self.session.execute(
                select(Site).where(Site.site_key.in_(site_keys)).options(selectinload(Site.company))
            )
            self.sites_by_key = {site.site_key: site for site in result.scalars()}

    def check_site_keys(self, spec: SetupSpec) -> None:
        """Raise SetupError when a site key in the file belongs to another site in the database."""
        problems: list[Problem] = []
        for company_spec in spec.companies:
            for site_spec in company_spec.sites:
                owner = self.sites_by_key.get(site_spec.site_key or "")
                if owner is None:
                    continue
                if owner.company.name == company_spec.name and owner.name == site_spec.name:
                    continue
                problems.append(
                    Problem(
                        site_spec.path + ("site_key",),
                        f'site "{site_spec.name}": site_key is already used by site '
                        f'"{owner.name}" of company "{owner.company.name}", expected a key of its '
                        "own or no site_key to have one generated",
                    )
                )
        if problems:
            raise SetupError(problems)

    # -- companies and sources ---------------------------------------------------------------

    def apply_company(self, spec: CompanySpec) -> None:
        company = self.companies.get(spec.name)
        values = {
            "timezone": spec.timezone,
            "ring_timeout": spec.ring_timeout,
            "recording": spec.recording,
        }
        if company is None:
            company = Company(name=spec.name, destinations=[], sources=[], sites=[], **values)
            self.session.add(company)
            self.companies[spec.name] = company
            self.apply_destinations(company, spec)
            self.report.created["companies"] += 1
        else:
            changed = _assign(company, values)
            changed = self.apply_destinations(company, spec) or changed
            self._count("companies", changed)

        listed = {source.name for source in spec.sources}
        for source in company.sources:
            if source.name not in listed:
                self.report.left_alone.append(
                    f'source "{source.name}" of company "{company.name}"'
                )
        for source_spec in spec.sources:
            self.apply_source(company, source_spec)

    def apply_destinations(self, company: Company, spec: CompanySpec) -> bool:
        """Make the hunt list equal the file's list, updating rows in place by position."""
        changed = False
        existing = {destination.position: destination for destination in company.destinations}
        for position, destination_spec in enumerate(spec.destinations, start=1):
            values = {
                "endpoint": destination_spec.endpoint,
                "ring_timeout": destination_spec.ring_timeout,
            }
            destination = existing.pop(position, None)
            if destination is None:
                company.destinations.append(Destination(position=position, **values))
                changed = True
            else:
                changed = _assign(destination, values) or changed
        for destination in existing.values():
            company.destinations.remove(destination)
            changed = True
        return changed

    def apply_source(self, company: Company, spec: SourceSpec) -> None:
        values = {
            "kind": spec.kind,
            "dynamic": spec.dynamic,
            "match_utm_source": spec.utm_source,
            "match_utm_medium": spec.utm_medium,
            "match_utm_campaign": spec.utm_campaign,
            "match_referrer_host": spec.referrer_host,
            "priority": spec.priority,
        }
        source = next((source for source in company.sources if source.name == spec.name), None)
        if source is None:
            source = Source(name=spec.name, spend=[], **values)
            company.sources.append(source)
            self.apply_spend(source, spec)
            self.report.created["sources"] += 1
            return
        changed = _assign(source, values)
        changed = self.apply_spend(source, spec) or changed
        self._count("sources", changed)

    def apply_spend(self, source: Source, spec: SourceSpec) -> bool:
        """Make the source's spend equal the file's list, matching periods by their start."""
        changed = False
        existing = {spend.period_start: spend for spend in source.spend}
        for spend_spec in spec.spend:
            values = {
                "period_end": spend_spec.end,
                "amount": spend_spec.amount,
                "currency": spend_spec.currency,
            }
            spend = existing.pop(spend_spec.start, None)
            if spend is None:
                source.spend.append(SourceSpend(period_start=spend_spec.start, **values))
                changed = True
            else:
                changed = _assign(spend, values) or changed
        for spend in existing.values():
            source.spend.remove(spend)
            changed = True
        return changed

    async def apply_webhooks(self, spec: CompanySpec) -> None:
        """Make the company's webhooks match the file, unless the file has no webhooks key."""
        company = self.companies[spec.name]
        result = await self.session.scalars(select(Webhook).where(Webhook.company_id == company.id))
        existing = {webhook.url: webhook for webhook in result}
        if spec.webhooks is None:
            if existing:
                noun = "webhook" if len(existing) == 1 else "webhooks"
                self.report.left_alone.append(
                    f'{len(existing)} {noun} of company "{company.name}" (the file has no webhooks '
                    "key for the company. Write webhooks = [] to remove them)"
                )
            return

        # Compared here because replace_company_webhooks assigns every value of every row.
        for webhook_spec in spec.webhooks:
            webhook = existing.pop(webhook_spec.url, None)
            if webhook is None:
                self.report.created["webhooks"] += 1
                continue
            changed = (
                webhook.secret != webhook_spec.secret
                or webhook.events != list(webhook_spec.events)
                or webhook.enabled != webhook_spec.enabled
            )
            self._count("webhooks", changed)
        for url in sorted(existing):
            self.report.removed_webhooks.append(f'{url} of company "{company.name}"')
            log.info("webhook %s of company %s removed", url, company.name)

        await replace_company_webhooks(self.session, company.id, spec.webhooks)

    # -- sites and pools -------------------------------------------------------------------

    def apply_sites(self, spec: CompanySpec) -> None:
        company = self.companies[spec.name]
        source_ids = {source.name: source.id for source in company.sources}
        listed = {site.name for site in spec.sites}
        for site in company.sites:
            if site.name not in listed:
                self.report.left_alone.append(f'site "{site.name}" of company "{company.name}"')

        for site_spec in spec.sites:
            site = next((site for site in company.sites if site.name == site_spec.name), None)
            values: dict[str, Any] = {
                "allowed_origins": list(site_spec.allowed_origins),
                "display_format": site_spec.display_format,
                "direct_source_id": source_ids.get(site_spec.direct_source or ""),
                "default_source_id": source_ids.get(site_spec.default_source or ""),
            }
            if site_spec.site_key is not None:
                values["site_key"] = site_spec.site_key
            if site is None:
                values.setdefault("site_key", secrets.token_urlsafe(_SITE_KEY_BYTES))
                company.sites.append(Site(name=site_spec.name, **values))
                self.report.created["sites"] += 1
            else:
                # Counted in apply_default_numbers, which may still change the site.
                self.changed_sites[(company.name, site.name)] = _assign(site, values)

    def apply_pools(self, spec: CompanySpec) -> None:
        company = self.companies[spec.name]
        for site_spec in spec.sites:
            site = next(site for site in company.sites if site.name == site_spec.name)
            listed = {pool.name for pool in site_spec.pools}
            for (site_id, name), pool in self.pools.items():
                if site_id == site.id and name not in listed:
                    self.report.left_alone.append(
                        f'pool "{name}" of site "{site.name}" (its numbers are retired unless '
                        "the file lists them elsewhere)"
                    )
            for pool_spec in site_spec.pools:
                self.apply_pool(site, pool_spec)

    def apply_pool(self, site: Site, spec: PoolSpec) -> None:
        values = {
            "hold_time": spec.hold_time,
            "heartbeat_interval": spec.heartbeat_interval,
            "exhausted_policy": spec.exhausted_policy,
        }
        pool = self.pools.get((site.id, spec.name))
        if pool is None:
            pool = NumberPool(site=site, name=spec.name, **values)
            self.session.add(pool)
            self.pools[(site.id, spec.name)] = pool
            self.report.created["pools"] += 1
            return
        self._count("pools", _assign(pool, values))

    # -- numbers ---------------------------------------------------------------------------

    def apply_numbers(self, spec: SetupSpec) -> None:
        for company_spec in spec.companies:
            company = self.companies[company_spec.name]
            source_ids = {source.name: source.id for source in company.sources}
            for number_spec in company_spec.numbers:
                self.bind_number(
                    number_spec.number,
                    company,
                    {
                        "mode": NumberMode.STATIC.value,
                        "source_id": source_ids[number_spec.source],
                        "pool_id": None,
                    },
                    f'source "{number_spec.source}"',
                )
            for site_spec in company_spec.sites:
                site = next(site for site in company.sites if site.name == site_spec.name)
                for pool_spec in site_spec.pools:
                    pool = self.pools[(site.id, pool_spec.name)]
                    for number in pool_spec.numbers:
                        self.bind_number(
                            number,
                            company,
                            {"mode": NumberMode.POOL.value, "source_id": None, "pool_id": pool.id},
                            f'pool "{site.name}/{pool.name}"',
                        )
        self.retire_dropped_numbers(spec)

    def bind_number(
        self, number: str, company: Company, binding: dict[str, Any], target: str
    ) -> None:
        values = {"company_id": company.id, "state": NumberState.ACTIVE.value, **binding}
        row = self.numbers.get(number)
        if row is None:
            row = TrackingNumber(number=number, **values)
            self.session.add(row)
            self.numbers[number] = row
            self.report.created["numbers"] += 1
            return

        # NOTE: a pool number moved to a source or to another pool keeps its lease history and
        # any current hold, so the leasing code must check the number's pool and state.
        previous = _describe_binding(row)
        previous_company = row.company.name
        was_retired = row.state == NumberState.RETIRED.value
        moved_company = row.company_id != company.id
        moved = moved_company or any(getattr(row, key) != value for key, value in binding.items())
        changed = _assign(row, values)
        self._count("numbers", changed)
        if moved:
            if moved_company:
                previous = f'{previous} of company "{previous_company}"'
                target = f'{target} of company "{company.name}"'
            self.report.moved.append(f"{number}: {previous} -> {target}")
            log.info("number %s moved from %s to %s", number, previous, target)
        elif was_retired:
            log.info("number %s is active again", number)

    def retire_dropped_numbers(self, spec: SetupSpec) -> None:
        """Retire active numbers of the file's companies that the file no longer lists."""
        listed = set(spec.all_numbers)
        company_ids = {self.companies[company.name].id for company in spec.companies}
        for number, row in sorted(self.numbers.items()):
            if number in listed or row.company_id not in company_ids:
                continue
            if row.state == NumberState.RETIRED.value:
                self.report.unchanged["numbers"] += 1
                continue
            row.state = NumberState.RETIRED.value
            self.report.retired.append(f"{number} ({_describe_binding(row)})")
            log.info("number %s retired", number)

    def apply_default_numbers(self, spec: CompanySpec) -> None:
        company = self.companies[spec.name]
        for site_spec in spec.sites:
            site = next(site for site in company.sites if site.name == site_spec.name)
            number_id = None
            if site_spec.default_number is not None:
                number_id = self.numbers[site_spec.default_number].id
            changed = _assign(site, {"default_number_id": number_id})
            key = (company.name, site.name)
            if key in self.changed_sites:
                self._count("sites", self.changed_sites[key] or changed)

    def _count(self, kind: str, changed: bool) -> None:
        if changed:
            self.report.updated[kind] += 1
        else:
            self.report.unchanged[kind] += 1


def _assign(row: Any, values: dict[str, Any]) -> bool:
    """Set the attributes that differ and return whether any did, so equal rows stay untouched."""
    changed = False
    for key, value in values.items():
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed = True
    return changed


def _describe_binding(row: TrackingNumber) -> str:
    if row.pool is not None:
        return f'pool "{row.pool.site.name}/{row.pool.name}"'
    if row.source is not None:
        return f'source "{row.source.name}"'
    return "no source"
