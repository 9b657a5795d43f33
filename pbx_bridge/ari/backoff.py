"""Reconnect delays: capped exponential backoff with jitter."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

# Each delay is shortened by up to this fraction so that several pbx-bridge instances that lost
# Asterisk at the same moment do not reconnect in step. Shortening, never lengthening, keeps every
# delay at or below the maximum.
JITTER = 0.1


def reconnect_delays(
    min_delay: float,
    max_delay: float,
    *,
    jitter: float = JITTER,
    random_fraction: Callable[[], float] = random.random,
) -> Iterator[float]:
    """Yield seconds to wait before each reconnect attempt: min_delay doubling up to max_delay.

    The sequence is endless; start a new one to reset the backoff.
    """
    if min_delay <= 0 or max_delay < min_delay:
        raise ValueError(
            f"invalid reconnect delays: min {min_delay} and max {max_delay} must satisfy "
            "0 < min <= max (ari.reconnect_min_delay, ari.reconnect_max_delay)"
        )
    delay = min_delay
    while True:
        yield delay * (1.0 - jitter * random_fraction())
        delay = min(delay * 2.0, max_delay)
