"""HTTP requests to receivers, with aiohttp's failures mapped to one result type.

Request URLs can carry secrets (the GA4 API secret is a query parameter), so error texts name the
host and the failure, never the URL.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

# Characters of a receiver's response body kept in the outbox row for inspection.
MAX_KEPT_RESPONSE = 2000


@dataclass(frozen=True)
class SendResult:
    """The outcome of one attempt to send one row (or one Metrica batch)."""

    delivered: bool
    status: int | None = None
    error: str | None = None
    # True when no retry can help, such as a GA4 event older than the protocol accepts.
    permanent: bool = False
    upload_id: str | None = None
    upload_status: str | None = None


@dataclass(frozen=True)
class HttpResponse:
    status: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class ReceiverUnreachable(Exception):
    """No HTTP response arrived: connection refused or reset, DNS failure or timeout."""


async def post(
    http: aiohttp.ClientSession, url: str, *, timeout: float, **kwargs: Any
) -> HttpResponse:
    """POST to `url` and read the response; raise ReceiverUnreachable when none arrives."""
    host = urlsplit(url).netloc
    try:
        async with http.post(url, timeout=aiohttp.ClientTimeout(total=timeout), **kwargs) as response:
            text = await response.text(errors="replace")
            return HttpResponse(response.status, text)
    except asyncio.TimeoutError:
        raise ReceiverUnreachable(f"no response from {host} within {timeout:g} s") from None
    except aiohttp.ClientError as error:
        raise ReceiverUnreachable(f"request to {host} failed: {type(error).__name__}") from None


def failure(response: HttpResponse) -> SendResult:
    """Describe a non-2xx response, keeping the start of the receiver's body."""
    body = response.text[:MAX_KEPT_RESPONSE]
    return SendResult(False, response.status, f"HTTP {response.status}: {body}")
