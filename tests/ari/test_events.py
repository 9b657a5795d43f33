"""Decoding of websocket frames."""

from __future__ import annotations

import pytest

from pbx_bridge.ari.events import MalformedEvent, decode_event, describe_frame


def test_text_object_is_decoded() -> None:
    assert decode_event('{"type": "StasisStart", "args": ["74951110001"]}') == {
        "type": "StasisStart",
        "args": ["74951110001"],
    }


def test_utf8_bytes_object_is_decoded() -> None:
    assert decode_event('{"type": "ChannelVarset", "value": "Иван"}'.encode()) == {
        "type": "ChannelVarset",
        "value": "Иван",
    }


@pytest.mark.parametrize(
    ("frame", "value"),
    [
        ('{"type": "Dial", "x": NaN}', "nan"),
        ('{"type": "Dial", "x": -Infinity}', "-inf"),
        ('{"type": "Dial", "x": 1e400}', "inf"),
        (b'\xef\xbb\xbf{"type": "Dial", "x": 1}', "1"),
    ],
    ids=["nan", "infinity", "beyond_double", "bom"],
)
def test_odd_json_is_decoded(frame: str | bytes, value: str) -> None:
    # orjson rejects these, and the json module reads them, as pbx-bridge did before orjson.
    event = decode_event(frame)

    assert event["type"] == "Dial"
    assert str(event["x"]) == value


def test_unpaired_surrogate_is_replaced() -> None:
    event = decode_event('{"type": "StasisStart", "name": "Iv\\ud800an", "smile": "\\ud83d\\ude00"}')

    assert event["name"] == "Iv\ufffdan"
    assert event["smile"] == "\U0001f600"


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        ("not json", "frame is not JSON"),
        ("", "frame is not JSON"),
        (b"\xff\xfe", "frame is not JSON"),
        ("[1, 2]", "frame is a JSON list, expected an object"),
        ('"StasisStart"', "frame is a JSON str, expected an object"),
        ("null", "frame is a JSON NoneType, expected an object"),
        ('{"type": "StasisStart"}{"type": "StasisEnd"}', "frame is not JSON: unexpected content after document"),
        ('{"type": "StasisStart"', "frame is not JSON"),
    ],
)
def test_malformed_frame_is_rejected(frame: str | bytes, problem: str) -> None:
    with pytest.raises(MalformedEvent, match=problem):
        decode_event(frame)


def test_object_with_surrounding_whitespace_is_decoded() -> None:
    assert decode_event(' {"type": "StasisEnd"}\n') == {"type": "StasisEnd"}


def test_long_frame_is_cut_for_logs() -> None:
    assert describe_frame("x" * 200, limit=10) == "xxxxxxxxxx..."


def test_short_frame_is_kept_for_logs() -> None:
    assert describe_frame(b"short") == "short"
