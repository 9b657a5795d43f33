"""`pbx-bridge load` on invalid files: every problem names its line, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from models import Company, Destination, Site
from pbx_bridge.setup import loader
from tests.setup.conftest import SAMPLE_FILE, Cli

# A valid file. Each case below replaces a line of it with one that must fail.
BASE_FILE = """\
[[companies]]
name = "Окна"
timezone = "Europe/Moscow"
ring_timeout = 20
recording = true
destinations = ["PJSIP/office"]
numbers = [
  { number = "+7 495 222-00-01", source = "Газета" },
  { number = "+7 495 222-00-02", source = "Газета" },
]

[[companies.sources]]
name = "Газета"
kind = "offline"

[[companies.sources]]
name = "Директ"
kind = "online"
dynamic = true

[[companies.sites]]
name = "okna.ru"
default_number = "+7 495 222-00-01"
direct_source = "Директ"

[[companies.sites.pools]]
name = "main"
exhausted_policy = "reuse"
numbers = ["+7 495 222-00-11"]
"""

# (case id, lines of BASE_FILE to replace, replacement, text the message must contain)
BAD_FILES = [
    (
        "number-not-a-phone",
        '  { number = "+7 495 222-00-02", source = "Газета" },',
        '  { number = "+7 495 222", source = "Газета" },',
        '"+7 495 222" is not a valid phone number (region RU)',
    ),
    (
        "number-unknown-source",
        '  { number = "+7 495 222-00-02", source = "Газета" },',
        '  { number = "+7 495 222-00-02", source = "Газетта" },',
        'unknown source "Газетта", expected one of the company\'s sources: "Газета", "Директ"',
    ),
    (
        "site-unknown-source",
        'direct_source = "Директ"',
        'direct_source = "Прямые"',
        'direct_source refers to unknown source "Прямые"',
    ),
    (
        "duplicate-number-other-form",
        '  { number = "+7 495 222-00-02", source = "Газета" },',
        '  { number = "8 (495) 222-00-01", source = "Газета" },',
        "+74952220001 is listed twice in the file (first on line 8)",
    ),
    (
        "duplicate-number-static-and-pool",
        'numbers = ["+7 495 222-00-11"]',
        'numbers = ["74952220002"]',
        "+74952220002 is listed twice in the file (first on line 9)",
    ),
    (
        "unknown-key",
        'timezone = "Europe/Moscow"',
        'timzone = "Europe/Moscow"',
        'unknown key "timzone" (did you mean "timezone"?)',
    ),
    (
        "wrong-type-integer",
        "ring_timeout = 20",
        'ring_timeout = "20"',
        'ring_timeout is a string "20", expected an integer',
    ),
    (
        "wrong-type-boolean",
        "recording = true",
        'recording = "yes"',
        'recording is a string "yes", expected true or false',
    ),
    (
        "invalid-timezone",
        'timezone = "Europe/Moscow"',
        'timezone = "Europe/Moskva"',
        'timezone "Europe/Moskva" is not a known time zone',
    ),
    (
        "invalid-policy",
        'exhausted_policy = "reuse"',
        'exhausted_policy = "drop"',
        'exhausted_policy is a string "drop", expected "default-number" or "reuse"',
    ),
    (
        "invalid-kind",
        'kind = "offline"',
        'kind = "tv"',
        'kind is a string "tv", expected "offline" or "online"',
    ),
    (
        "invalid-destination",
        'destinations = ["PJSIP/office"]',
        'destinations = ["office"]',
        'destination "office" is not an Asterisk dial string',
    ),
    (
        "dynamic-offline-source",
        'kind = "online"\ndynamic = true',
        'kind = "offline"\ndynamic = true  # <-',
        'dynamic = true needs kind = "online"',
    ),
    (
        "company-key-inside-source",
        'kind = "offline"',
        'kind = "offline"\nnumbers = ["+7 495 222-00-03"]',
        '"numbers" is a key of the company',
    ),
    (
        "name-with-nul",
        'name = "Газета"',
        'name = "Газ\\u0000ета"',
        "companies[0].sources[0].name contains a NUL character (\\u0000), which the database "
        "cannot store",
    ),
    (
        "destination-with-nul",
        'destinations = ["PJSIP/office"]',
        'destinations = ["PJSIP/off\\u0000ice"]',
        "companies[0].destinations[0] contains a NUL character",
    ),
    (
        "number-with-extension",
        '  { number = "+7 495 222-00-02", source = "Газета" },',
        '  { number = "+7 495 222-00-02 ext 5", source = "Газета" },',
        '"+7 495 222-00-02 ext 5" has an extension, but a tracking number cannot have one',
    ),
    (
        "pool-number-with-extension",
        'numbers = ["+7 495 222-00-11"]',
        'numbers = ["8 (495) 222-00-11 доб. 7"]',
        '"8 (495) 222-00-11 доб. 7" has an extension',
    ),
    (
        "origin-with-path",
        'name = "okna.ru"',
        'name = "okna.ru"\nallowed_origins = ["https://okna.ru/contacts"]',
        'allowed origin a string "https://okna.ru/contacts" is invalid',
    ),
    (
        "malformed-toml",
        'name = "Газета"',
        'name = "Газета',
        "invalid TOML",
    ),
]


def write_bad_file(tmp_path: Path, lines: str, replacement: str) -> tuple[Path, int]:
    """Write BASE_FILE with `lines` replaced, and return the path and the line the error must name.

    That line is the one marked "# <-" in the replacement, else the replacement's last line.
    """
    assert BASE_FILE.count(lines) == 1
    start = BASE_FILE.index(lines)
    text = BASE_FILE.replace(lines, replacement)
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    marker = replacement.find("# <-")
    offset = replacement.count("\n", 0, marker) if marker >= 0 else replacement.count("\n")
    return path, BASE_FILE.count("\n", 0, start) + offset + 1


@pytest.fixture
def loaded(cli: Cli) -> Cli:
    """The sample file loaded, so "unchanged" compares against real rows."""
    assert cli.load(SAMPLE_FILE).status == 0
    return cli


def test_base_file_is_valid(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "base.toml"
    path.write_text(BASE_FILE, encoding="utf-8")

    result = cli.load(path)

    assert result.status == 0, result.err


@pytest.mark.parametrize(
    ("line", "replacement", "message"),
    [case[1:] for case in BAD_FILES],
    ids=[case[0] for case in BAD_FILES],
)
def test_bad_file_names_line_and_problem(
    cli: Cli, tmp_path: Path, line: str, replacement: str, message: str
) -> None:
    path, line_number = write_bad_file(tmp_path, line, replacement)

    result = cli.load(path)

    assert result.status == 2
    assert f"{path}:{line_number}: " in result.err
    assert message in result.err


@pytest.mark.parametrize(
    ("line", "replacement"),
    [case[1:3] for case in BAD_FILES],
    ids=[case[0] for case in BAD_FILES],
)
def test_bad_file_leaves_database_unchanged(
    loaded: Cli, tmp_path: Path, line: str, replacement: str
) -> None:
    path, _ = write_bad_file(tmp_path, line, replacement)
    before = loaded.rows()

    result = loaded.load(path)

    assert result.status == 2
    assert loaded.rows() == before
    assert ("Окна",) not in loaded.fetch(select(Company.name))


def test_every_problem_reported_at_once(cli: Cli, tmp_path: Path) -> None:
    text = BASE_FILE.replace('kind = "offline"', 'kind = "tv"').replace(
        "ring_timeout = 20", "ring_timeout = 0"
    )
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")

    result = cli.load(path)

    assert f"{path}:4: " in result.err
    assert f"{path}:14: " in result.err
    assert "2 problems found, nothing was written" in result.err


def test_missing_name_names_section_line(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BASE_FILE.replace('name = "Директ"\n', ""), encoding="utf-8")

    result = cli.load(path)

    # Line 16 is the [[companies.sources]] header of the source that lost its name.
    assert f'{path}:16: source: missing key "name"' in result.err


def test_site_key_of_another_site_rejected(loaded: Cli, tmp_path: Path) -> None:
    [(taken_key,)] = loaded.fetch(select(Site.site_key))
    path = tmp_path / "bad.toml"
    path.write_text(
        BASE_FILE.replace('name = "okna.ru"', f'name = "okna.ru"\nsite_key = "{taken_key}"'),
        encoding="utf-8",
    )
    before = loaded.rows()

    result = loaded.load(path)

    assert result.status == 2
    assert f'{path}:23: site "okna.ru": site_key is already used by site "okna-moskvy.ru"' in result.err
    assert loaded.rows() == before


def test_failure_after_writes_rolls_back(
    loaded: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(self, spec):
        raise OperationalError("UPDATE sites", {}, Exception("connection lost"))

    monkeypatch.setattr(loader._Loader, "apply_default_numbers", fail)
    path = tmp_path / "base.toml"
    path.write_text(BASE_FILE, encoding="utf-8")
    before = loaded.rows()

    result = loaded.load(path)

    assert result.status == 1
    assert "connection lost" in result.err
    assert loaded.rows() == before


def test_deeply_nested_toml_is_one_line(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "nested.toml"
    path.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")

    result = cli.load(path)

    assert result.status == 2
    assert result.err == f"pbx-bridge: {path}: invalid TOML: arrays or tables nested too deeply\n"


def test_allowed_origins_stored_normalized(cli: Cli, tmp_path: Path) -> None:
    origins = '["https://OKNA.RU:443", "http://Окна.рф:80/", "http://okna.ru:8080", "https://okna.ru"]'
    path = tmp_path / "origins.toml"
    path.write_text(
        BASE_FILE.replace('name = "okna.ru"', f'name = "okna.ru"\nallowed_origins = {origins}'),
        encoding="utf-8",
    )

    result = cli.load(path)

    assert result.status == 0, result.err
    [(stored,)] = cli.fetch(select(Site.allowed_origins))
    assert stored == ["https://okna.ru", "http://xn--80atjc.xn--p1ai", "http://okna.ru:8080"]


def test_dial_string_newline_rejected(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "newline.toml"
    path.write_text(
        BASE_FILE.replace('destinations = ["PJSIP/office"]', 'destinations = ["PJSIP/office\\n"]'),
        encoding="utf-8",
    )

    result = cli.load(path)

    assert result.status == 2
    assert f'{path}:6: company "Окна": destination "PJSIP/office\\u000a" is not an Asterisk dial string' in result.err
    assert cli.fetch(select(Destination.endpoint)) == []
