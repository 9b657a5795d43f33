"""Reconnect delays: doubling from the minimum, capped at the maximum, jitter only shortening."""

from __future__ import annotations

import itertools

import pytest

from pbx_bridge.ari.backoff import reconnect_delays


def test_delays_double_up_to_maximum() -> None:
    delays = reconnect_delays(0.5, 30.0, random_fraction=lambda: 0.0)

    assert list(itertools.islice(delays, 9)) == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_jitter_shortens_delay_by_fraction() -> None:
    delays = reconnect_delays(1.0, 4.0, jitter=0.1, random_fraction=lambda: 1.0)

    assert list(itertools.islice(delays, 4)) == pytest.approx([0.9, 1.8, 3.6, 3.6])


def test_jittered_delays_stay_within_bounds() -> None:
    delays = list(itertools.islice(reconnect_delays(0.5, 30.0), 200))

    assert max(delays) <= 30.0
    assert min(delays) >= 0.5 * 0.9


def test_late_delays_stay_near_maximum() -> None:
    delays = list(itertools.islice(reconnect_delays(0.5, 30.0), 200))[10:]

    assert min(delays) >= 30.0 * 0.9


def test_equal_bounds_give_constant_delay() -> None:
    delays = reconnect_delays(2.0, 2.0, random_fraction=lambda: 0.0)

    assert list(itertools.islice(delays, 3)) == [2.0, 2.0, 2.0]


@pytest.mark.parametrize(("min_delay", "max_delay"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_invalid_delays_are_rejected(min_delay: float, max_delay: float) -> None:
    with pytest.raises(ValueError, match="0 < min <= max"):
        next(reconnect_delays(min_delay, max_delay))
