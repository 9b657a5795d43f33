"""A company with one site, its sources and a pool of numbers, stored in the `database` fixture."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

import models
from pbx_bridge.storage import Database


@dataclass
class SiteSetup:
    site_id: int
    site_key: str
    pool_id: int
    default_source_id: int
    direct_source_id: int
    google_source_id: int
    newspaper_source_id: int
    default_number: str
    newspaper_number: str
    pool_numbers: list[str] = field(default_factory=list)


async def create_site(
    database: Database,
    *,
    pool_size: int = 3,
    hold_time: int = 900,
    policy: models.ExhaustedPolicy = models.ExhaustedPolicy.DEFAULT_NUMBER,
    origins: tuple[str, ...] = ("https://okna.example",),
) -> SiteSetup:
    """Store a site whose Google sessions get pool numbers and whose newspaper source is static."""
    async with database.transaction() as session:
        company = models.Company(name="Okna")
        session.add(company)
        await session.flush()

        def source(name: str, **rules: object) -> models.Source:
            row = models.Source(company_id=company.id, name=name, kind="online", **rules)
            session.add(row)
            return row

        default = source("Unmatched")
        direct = source("Direct")
        google = source("Google Ads", dynamic=True, match_utm_source="google", priority=10)
        newspaper = source("Newspaper site", match_referrer_host="gazeta.example", priority=20)
        await session.flush()

        site = models.Site(
            company_id=company.id,
            name="okna.example",
            site_key="okna-key-1",
            allowed_origins=list(origins),
            default_source_id=default.id,
            direct_source_id=direct.id,
            display_format="+7 (XXX) XXX-XX-XX",
        )
        session.add(site)
        await session.flush()

        pool = models.NumberPool(
            site_id=site.id, name="main", hold_time=hold_time, exhausted_policy=policy.value
        )
        session.add(pool)
        await session.flush()

        default_number = models.TrackingNumber(number="+74950000001", company_id=company.id)
        newspaper_number = models.TrackingNumber(
            number="+74950000002", company_id=company.id, source_id=newspaper.id
        )
        session.add_all([default_number, newspaper_number])
        pool_numbers = [f"+7495100{index:04d}" for index in range(pool_size)]
        for number in pool_numbers:
            session.add(
                models.TrackingNumber(
                    number=number, company_id=company.id, mode="pool", pool_id=pool.id
                )
            )
        await session.flush()
        site.default_number_id = default_number.id

        return SiteSetup(
            site_id=site.id,
            site_key=site.site_key,
            pool_id=pool.id,
            default_source_id=default.id,
            direct_source_id=direct.id,
            google_source_id=google.id,
            newspaper_source_id=newspaper.id,
            default_number=default_number.number,
            newspaper_number=newspaper_number.number,
            pool_numbers=pool_numbers,
        )


@pytest.fixture
async def site(database: Database) -> SiteSetup:
    return await create_site(database)
