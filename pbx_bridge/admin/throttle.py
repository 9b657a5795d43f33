"""A limit on failed logins per client IP and per login, kept in memory.

Each process keeps its own counts, so behind a load balancer with N instances a client gets up
to N times the limit, and a restart clears every count.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from aiohttp import web

from pbx_bridge.http.app import CONTEXT

# A person who mistypes a password a few times stays far below these limits. Ten failures a
# login in five minutes let an attacker try fewer than 3,000 passwords a day on one account.
FAILURES_PER_LOGIN = 10
FAILURES_PER_IP = 30
WINDOW_SECONDS = 300.0
# Keys tracked per limit. When full, the key that failed least recently is dropped.
MAX_KEYS = 10_000


class FailureWindow:
    """Failure times per key within a sliding window, for at most `max_keys` keys."""

    def __init__(self, limit: int, window: float, max_keys: int = MAX_KEYS) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, key: str, now: float) -> float:
        """Return the seconds until `key` may try again; 0 when it may try now."""
        times = self._failures.get(key)
        if times is None:
            return 0.0
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0.0
        if len(times) < self.limit:
            return 0.0
        return times[0] + self.window - now

    def record(self, key: str, now: float) -> None:
        times = self._failures.get(key)
        if times is None:
            times = self._failures[key] = deque(maxlen=self.limit)
        times.append(now)
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def forget_latest(self, key: str) -> None:
        times = self._failures.get(key)
        if times:
            times.pop()

    def clear(self, key: str) -> None:
        self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._failures)


class LoginThrottle:
    """Failed logins per client IP and per login.

    An attempt counts as a failure from the moment it starts, so concurrent attempts cannot all
    pass the check before the first one fails. A successful login takes its own attempt back
    and clears the failures of its login.

    NOTE: anyone who knows a login can lock it out for the window by failing on purpose. The
    per-IP limit slows that down but cannot stop attempts from many addresses.
    """

    def __init__(
        self,
        per_login: FailureWindow | None = None,
        per_ip: FailureWindow | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_login is None:
            per_login = FailureWindow(FAILURES_PER_LOGIN, WINDOW_SECONDS)
        if per_ip is None:
            per_ip = FailureWindow(FAILURES_PER_IP, WINDOW_SECONDS)
        self.per_login = per_login
        self.per_ip = per_ip
        self.clock = clock

    def start_attempt(self, ip: str, login: str) -> int:
        """Record an attempt and return 0, or return the whole seconds to wait when a limit is
        reached, in which case nothing is recorded."""
        now = self.clock()
        wait = max(self.per_ip.retry_after(ip, now), self.per_login.retry_after(login, now))
        if wait > 0:
            return max(1, math.ceil(wait))
        self.per_ip.record(ip, now)
        self.per_login.record(login, now)
        return 0

    def succeeded(self, ip: str, login: str) -> None:
        self.per_ip.forget_latest(ip)
        self.per_login.clear(login)


LOGIN_THROTTLE = web.AppKey("login_throttle", LoginThrottle)


def client_ip(request: web.Request) -> str:
    """Return the client address: the last entry of [tracking] client_ip_header when it is set
    (behind a reverse proxy), else the peer address of the connection."""
    header = request.app[CONTEXT].config.tracking.client_ip_header
    if header:
        last = request.headers.get(header, "").rsplit(",", 1)[-1].strip()
        if last:
            return last[:45]
    return request.remote or "unknown"
