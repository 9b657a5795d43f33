"""`pbx-bridge load`: the sample file, idempotence, moved, retired and replaced rows."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select

from models import (
    Company,
    Destination,
    NumberPool,
    Site,
    Source,
    SourceSpend,
    TrackingNumber,
)
from tests.setup.conftest import SAMPLE_FILE, Cli

SMALL_FILE = """
[[companies]]
name = "Окна"
destinations = {destinations}
numbers = [
{numbers}
]

[[companies.sources]]
name = "Газета"

[[companies.sources]]
name = "Радио"

[[companies.sources]]
name = "Директ"
kind = "online"
dynamic = true

[[companies.sites]]
name = "okna.ru"
{site_key}
default_number = "+7 495 111-00-01"

[[companies.sites.pools]]
name = "main"
numbers = [{pool_numbers}]
"""


def write_small_file(
    tmp_path: Path,
    *,
    numbers: str = '{ number = "+7 495 111-00-01", source = "Газета" },\n'
    '{ number = "+7 495 111-00-02", source = "Газета" },',
    pool_numbers: str = '"+7 495 111-00-11"',
    destinations: str = '["PJSIP/office", "PJSIP/+79161234567@trunk"]',
    site_key: str = "",
) -> Path:
    path = tmp_path / "setup.toml"
    path.write_text(
        SMALL_FILE.format(
            numbers=numbers, pool_numbers=pool_numbers, destinations=destinations, site_key=site_key
        ),
        encoding="utf-8",
    )
    return path


def number_rows(cli: Cli) -> dict[str, tuple]:
    rows = cli.fetch(
        select(
            TrackingNumber.number,
            TrackingNumber.id,
            TrackingNumber.mode,
            Source.name,
            NumberPool.name,
            TrackingNumber.state,
        )
        .outerjoin(Source, Source.id == TrackingNumber.source_id)
        .outerjoin(NumberPool, NumberPool.id == TrackingNumber.pool_id)
    )
    return {row[0]: tuple(row[1:]) for row in rows}


def test_sample_file_loads(cli: Cli) -> None:
    result = cli.load(SAMPLE_FILE)

    assert result.status == 0, result.err
    assert cli.fetch(select(Company.name).order_by(Company.name)) == [
        ("Окна Москвы",),
        ("Стоматология «Улыбка»",),
    ]
    assert len(cli.fetch(select(Source.id))) == 9
    assert len(cli.fetch(select(TrackingNumber.id))) == 11
    assert "11 created" in result.out


def test_sample_file_company_fields(cli: Cli) -> None:
    cli.load(SAMPLE_FILE)

    [company] = cli.fetch(
        select(Company.timezone, Company.ring_timeout, Company.recording).where(
            Company.name == "Стоматология «Улыбка»"
        )
    )
    assert tuple(company) == ("Asia/Yekaterinburg", 20, False)


def test_sample_file_destinations_in_order(cli: Cli) -> None:
    cli.load(SAMPLE_FILE)

    destinations = cli.fetch(
        select(Destination.position, Destination.endpoint, Destination.ring_timeout)
        .join(Company)
        .where(Company.name == "Окна Москвы")
        .order_by(Destination.position)
    )
    assert [tuple(row) for row in destinations] == [
        (1, "PJSIP/office", 15),
        (2, "PJSIP/+79161234567@trunk", None),
    ]


def test_sample_file_source_rules_and_spend(cli: Cli) -> None:
    cli.load(SAMPLE_FILE)

    [source] = cli.fetch(
        select(
            Source.kind,
            Source.dynamic,
            Source.match_utm_source,
            Source.match_utm_medium,
            Source.match_utm_campaign,
            Source.priority,
        ).where(Source.name == "Яндекс Директ")
    )
    assert tuple(source) == ("online", True, "yandex", "cpc", None, 10)
    [spend] = cli.fetch(
        select(SourceSpend.period_start, SourceSpend.period_end, SourceSpend.amount, SourceSpend.currency)
        .join(Source)
        .where(Source.name == "Яндекс Директ")
    )
    assert tuple(spend) == (date(2026, 12, 1), date(2026, 12, 31), Decimal("120000.50"), "RUB")


def test_sample_file_site_and_pool(cli: Cli) -> None:
    cli.load(SAMPLE_FILE)

    [site] = cli.fetch(select(Site))
    site = site[0]
    [default_number] = cli.fetch(
        select(TrackingNumber.number).where(TrackingNumber.id == site.default_number_id)
    )
    [direct_source] = cli.fetch(select(Source.name).where(Source.id == site.direct_source_id))
    assert site.allowed_origins == ["https://okna-moskvy.ru", "https://www.okna-moskvy.ru"]
    assert site.display_format == "+7 (XXX) XXX-XX-XX"
    assert default_number == ("+74951110005",)
    assert direct_source == ("Прямые заходы",)
    [pool] = cli.fetch(select(NumberPool.hold_time, NumberPool.heartbeat_interval, NumberPool.exhausted_policy))
    assert tuple(pool) == (900, 30, "default-number")


def test_human_number_forms_stored_in_e164(cli: Cli) -> None:
    cli.load(SAMPLE_FILE)

    numbers = number_rows(cli)
    # The sample writes these as "+7 495 111-00-01", "8 (495) 111-00-02" and "74951110003".
    assert numbers["+74951110001"][2] == "Газета «Из рук в руки»"
    assert numbers["+74951110002"][2] == "Билборд на МКАД"
    assert numbers["+74951110003"][2] == "Поиск Яндекса"


def test_second_load_leaves_rows_identical(cli: Cli) -> None:
    cli.load(SAMPLE_FILE)
    before = cli.rows()

    result = cli.load(SAMPLE_FILE)

    assert result.status == 0, result.err
    assert cli.rows() == before
    assert "Nothing changed." in result.out


def test_site_key_generated_once_and_kept(cli: Cli, tmp_path: Path) -> None:
    path = write_small_file(tmp_path)
    cli.load(path)
    [(first_key,)] = cli.fetch(select(Site.site_key))

    write_small_file(tmp_path, destinations='["PJSIP/reception"]')
    cli.load(path)
    [(second_key,)] = cli.fetch(select(Site.site_key))

    assert len(first_key) >= 32
    assert second_key == first_key


def test_site_key_from_file_replaces_generated(cli: Cli, tmp_path: Path) -> None:
    cli.load(write_small_file(tmp_path))

    cli.load(write_small_file(tmp_path, site_key='site_key = "okna-public-key"'))

    assert cli.fetch(select(Site.site_key)) == [("okna-public-key",)]


def test_number_moved_between_sources(cli: Cli, tmp_path: Path) -> None:
    cli.load(write_small_file(tmp_path))
    [row_id, *_] = number_rows(cli)["+74951110002"]

    result = cli.load(
        write_small_file(
            tmp_path,
            numbers='{ number = "+7 495 111-00-01", source = "Газета" },\n'
            '{ number = "8 495 111 00 02", source = "Радио" },',
        )
    )

    assert result.status == 0, result.err
    assert number_rows(cli)["+74951110002"] == (row_id, "static", "Радио", None, "active")
    assert len(cli.fetch(select(TrackingNumber.id))) == 3
    assert 'moved +74951110002: source "Газета" -> source "Радио"' in result.out


def test_number_moved_from_source_to_pool(cli: Cli, tmp_path: Path) -> None:
    cli.load(write_small_file(tmp_path))
    [row_id, *_] = number_rows(cli)["+74951110002"]

    result = cli.load(
        write_small_file(
            tmp_path,
            numbers='{ number = "+7 495 111-00-01", source = "Газета" },',
            pool_numbers='"+7 495 111-00-11", "+7 495 111-00-02"',
        )
    )

    assert result.status == 0, result.err
    assert number_rows(cli)["+74951110002"] == (row_id, "pool", None, "main", "active")
    assert len(cli.fetch(select(TrackingNumber.id))) == 3


def test_dropped_number_is_retired_not_deleted(cli: Cli, tmp_path: Path) -> None:
    cli.load(write_small_file(tmp_path))
    [row_id, *_] = number_rows(cli)["+74951110002"]

    result = cli.load(
        write_small_file(tmp_path, numbers='{ number = "+7 495 111-00-01", source = "Газета" },')
    )

    assert result.status == 0, result.err
    assert number_rows(cli)["+74951110002"] == (row_id, "static", "Газета", None, "retired")
    assert "retired +74951110002" in result.out


def test_retired_number_listed_again_is_active(cli: Cli, tmp_path: Path) -> None:
    path = write_small_file(tmp_path)
    cli.load(path)
    cli.load(write_small_file(tmp_path, numbers='{ number = "+7 495 111-00-01", source = "Газета" },'))

    cli.load(write_small_file(tmp_path))

    assert number_rows(cli)["+74951110002"][4] == "active"


def test_numbers_of_other_companies_not_retired(cli: Cli, tmp_path: Path) -> None:
    cli.load(SAMPLE_FILE)

    cli.load(write_small_file(tmp_path))

    assert number_rows(cli)["+73432100001"][4] == "active"
    assert number_rows(cli)["+74951110011"][4] == "active"


def test_destinations_replaced_by_file_list(cli: Cli, tmp_path: Path) -> None:
    cli.load(write_small_file(tmp_path))

    cli.load(
        write_small_file(
            tmp_path, destinations='[{ endpoint = "Local/100@queue", ring_timeout = 40 }]'
        )
    )

    destinations = cli.fetch(
        select(Destination.position, Destination.endpoint, Destination.ring_timeout)
    )
    assert [tuple(row) for row in destinations] == [(1, "Local/100@queue", 40)]


def test_dropped_source_left_and_reported(cli: Cli, tmp_path: Path) -> None:
    path = write_small_file(tmp_path)
    cli.load(path)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace('[[companies.sources]]\nname = "Радио"\n', ""), encoding="utf-8")

    result = cli.load(path)

    assert result.status == 0, result.err
    assert ("Радио",) in cli.fetch(select(Source.name))
    assert 'not in the file, left as it is: source "Радио" of company "Окна"' in result.out


def test_dry_run_writes_nothing(cli: Cli) -> None:
    before = cli.rows()

    result = cli.load(SAMPLE_FILE, "--dry-run")

    assert result.status == 0, result.err
    assert cli.rows() == before
    assert "nothing was written (--dry-run)" in result.out
    assert "11 created" in result.out


def test_load_needs_migrated_database(tmp_path: Path, capsys) -> None:
    from pbx_bridge.cli import main

    config_path = tmp_path / "pbx-bridge.toml"
    config_path.write_text(
        f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "empty.db"}"\n', encoding="utf-8"
    )

    status = main(["--config", str(config_path), "load", str(SAMPLE_FILE)])

    assert status == 1
    assert "Run: pbx-bridge db upgrade" in capsys.readouterr().err


def test_docs_embed_current_sample_file() -> None:
    sample = SAMPLE_FILE.read_text(encoding="utf-8")
    docs = SAMPLE_FILE.parents[1] / "docs"

    assert sample in (docs / "setup.md").read_text(encoding="utf-8")
    assert sample in (docs / "setup.ru.md").read_text(encoding="utf-8")
