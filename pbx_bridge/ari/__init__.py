"""A thin Asterisk ARI client of our own, on aiohttp.

pbx-bridge does not use aioari: it has had no release since 2020, it downloads and parses the
whole Swagger specification at connect time, it does not reconnect a dropped websocket, and it
runs every event callback in one global sequence. This package sends the few REST requests the
call flow needs, maps failures to the exceptions below, and keeps one application's event
websocket attached with capped exponential backoff.
"""

from pbx_bridge.ari.client import AriClient
from pbx_bridge.ari.errors import (
    AriError,
    AriUnavailable,
    BadRequest,
    Conflict,
    InvalidState,
    NotFound,
    NotInStasis,
    ServerError,
    Unauthorized,
)

__all__ = [
    "AriClient",
    "AriError",
    "AriUnavailable",
    "BadRequest",
    "Conflict",
    "InvalidState",
    "NotFound",
    "NotInStasis",
    "ServerError",
    "Unauthorized",
]
