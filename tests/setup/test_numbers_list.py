"""`pbx-bridge numbers list`: a readable table and JSON of the configured numbers."""

from __future__ import annotations

import json

from tests.setup.conftest import SAMPLE_FILE, Cli


def test_table_lists_loaded_numbers(cli: Cli) -> None:
    cli.load(SAMPLE_FILE)

    result = cli.run("numbers", "list")

    assert result.status == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split() == ["COMPANY", "NUMBER", "MODE", "SOURCE", "SITE", "POOL", "STATE"]
    assert lines[-1] == "11 numbers: 11 active, 0 retired"
    static_row = next(line for line in lines if "+74951110001" in line)
    assert static_row.split()[:3] == ["Окна", "Москвы", "+74951110001"]
    assert "Газета «Из рук в руки»" in static_row
    pool_row = next(line for line in lines if "+74951110011" in line)
    assert "okna-moskvy.ru" in pool_row
    assert "Контекстная реклама" in pool_row


def test_table_columns_aligned(cli: Cli) -> None:
    cli.load(SAMPLE_FILE)

    lines = cli.run("numbers", "list").out.splitlines()[:-1]

    number_column = lines[0].index("NUMBER")
    assert all(line[number_column] == "+" for line in lines[1:])


def test_json_lists_every_number(cli: Cli) -> None:
    cli.load(SAMPLE_FILE)

    result = cli.run("numbers", "list", "--json")

    rows = json.loads(result.out)
    assert len(rows) == 11
    assert {
        "company": "Окна Москвы",
        "number": "+74951110011",
        "mode": "pool",
        "source": None,
        "site": "okna-moskvy.ru",
        "pool": "Контекстная реклама",
        "state": "active",
    } in rows
    assert {
        "company": "Стоматология «Улыбка»",
        "number": "+73432100002",
        "mode": "static",
        "source": "2ГИС",
        "site": None,
        "pool": None,
        "state": "active",
    } in rows


def test_company_filter(cli: Cli) -> None:
    cli.load(SAMPLE_FILE)

    rows = json.loads(cli.run("numbers", "list", "--json", "--company", "Стоматология «Улыбка»").out)

    assert [row["number"] for row in rows] == ["+73432100001", "+73432100002"]


def test_state_filter_shows_retired(cli: Cli, tmp_path) -> None:
    cli.load(SAMPLE_FILE)
    trimmed = tmp_path / "trimmed.toml"
    trimmed.write_text(
        SAMPLE_FILE.read_text(encoding="utf-8").replace('  "+7 495 111-00-14",\n', ""),
        encoding="utf-8",
    )
    cli.load(trimmed)

    rows = json.loads(cli.run("numbers", "list", "--json", "--state", "retired").out)

    assert [(row["number"], row["state"]) for row in rows] == [("+74951110014", "retired")]


def test_empty_database_prints_hint(cli: Cli) -> None:
    result = cli.run("numbers", "list")

    assert result.status == 0
    assert "No tracking numbers found" in result.out


def test_empty_database_json_is_empty_array(cli: Cli) -> None:
    result = cli.run("numbers", "list", "--json")

    assert json.loads(result.out) == []
