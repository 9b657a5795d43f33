"""Decoding of ARI websocket frames into event dicts."""

from __future__ import annotations

from typing import Any

import orjson


class MalformedEvent(ValueError):
    """A websocket frame that is not a JSON object."""


def decode_event(frame: str | bytes) -> dict[str, Any]:
    """Parse one websocket frame; raise MalformedEvent unless it is a JSON object."""
    try:
        # orjson parses an event in about a third of json's time (docs/benchmarks.md).
        event = orjson.loads(frame)
    except orjson.JSONDecodeError as error:
        raise MalformedEvent(f"frame is not JSON: {error}") from None
    if not isinstance(event, dict):
        raise MalformedEvent(f"frame is a JSON {type(event).__name__}, expected an object")
    return event


def describe_frame(frame: str | bytes, limit: int = 120) -> str:
    """Return the start of a frame for a log line, cut to `limit` characters."""
    text = frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame
    return text if len(text) <= limit else text[:limit] + "..."
