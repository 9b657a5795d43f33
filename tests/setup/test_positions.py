"""Line numbers of keys and values in TOML text, used by load's error messages."""

from __future__ import annotations

import tomllib

from pbx_bridge.setup.positions import scan_positions

TEXT = '''\
# comment with [brackets] and "quotes"
title = "a # not a comment"

[[companies]]
name = "One"
"quoted key" = 1
dotted.inner = 2
notes = """
line with ] and "" quotes
"""
literal = \'\'\'C:\\path\'\'\'
list = [
  "a",  # comment
  { x = 1, y = [2, 3] },
  [4, 5],
]

[companies.extra]
z = 2026-12-01

[[companies]]
name = "Two"

[[companies.sources]]
name = "S"

[[companies.sources]]
name = "T"
when = 2026-12-01 10:00:00Z
'''


def test_sample_text_is_valid_toml() -> None:
    assert tomllib.loads(TEXT)["companies"][1]["sources"][1]["name"] == "T"


def test_array_of_tables_elements() -> None:
    positions = scan_positions(TEXT)

    assert positions.line_of(("companies", 0)) == 4
    assert positions.line_of(("companies", 1, "name")) == 22
    assert positions.line_of(("companies", 1, "sources", 1, "name")) == 28


def test_quoted_and_dotted_keys() -> None:
    positions = scan_positions(TEXT)

    assert positions.line_of(("companies", 0, "quoted key")) == 6
    assert positions.line_of(("companies", 0, "dotted", "inner")) == 7


def test_keys_after_multiline_strings() -> None:
    positions = scan_positions(TEXT)

    assert positions.line_of(("companies", 0, "literal")) == 11
    assert positions.line_of(("companies", 0, "list")) == 12


def test_array_elements_and_inline_tables() -> None:
    positions = scan_positions(TEXT)

    assert positions.line_of(("companies", 0, "list", 1)) == 14
    assert positions.line_of(("companies", 0, "list", 1, "y", 1)) == 14
    assert positions.line_of(("companies", 0, "list", 2, 0)) == 15


def test_subtable_of_array_element() -> None:
    positions = scan_positions(TEXT)

    assert positions.line_of(("companies", 0, "extra", "z")) == 19


def test_missing_key_falls_back_to_its_table() -> None:
    positions = scan_positions(TEXT)

    assert positions.line_of(("companies", 1, "sources", 0, "kind")) == 24


def test_date_time_with_space_value() -> None:
    positions = scan_positions(TEXT)

    assert positions.line_of(("companies", 1, "sources", 1, "when")) == 29


def test_document_has_no_line() -> None:
    assert scan_positions(TEXT).line_of(()) is None
