"""Failed logins are limited per client IP and per login, with 429 and Retry-After."""

from __future__ import annotations

from pbx_bridge.admin.throttle import LOGIN_THROTTLE, FailureWindow, LoginThrottle
from tests.admin.conftest import PASSWORD, World


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def small_throttle(clock: Clock, per_login: int = 3, per_ip: int = 5, max_keys: int = 100) -> LoginThrottle:
    return LoginThrottle(FailureWindow(per_login, 60.0, max_keys), FailureWindow(per_ip, 60.0, max_keys), clock)


def test_login_limit_reached_returns_wait() -> None:
    clock = Clock()
    throttle = small_throttle(clock)
    for _ in range(3):
        assert throttle.start_attempt("10.0.0.1", "admin") == 0
        clock.now += 1

    assert throttle.start_attempt("10.0.0.2", "admin") == 57
    assert throttle.start_attempt("10.0.0.2", "viewer") == 0


def test_ip_limit_covers_every_login() -> None:
    clock = Clock()
    throttle = small_throttle(clock)
    for index in range(5):
        assert throttle.start_attempt("10.0.0.1", f"user{index}") == 0

    assert throttle.start_attempt("10.0.0.1", "someone-else") == 60
    assert throttle.start_attempt("10.0.0.9", "someone-else") == 0


def test_window_passing_allows_again() -> None:
    clock = Clock()
    throttle = small_throttle(clock)
    for _ in range(3):
        throttle.start_attempt("10.0.0.1", "admin")

    clock.now += 60

    assert throttle.start_attempt("10.0.0.1", "admin") == 0


def test_rejected_attempt_not_counted() -> None:
    clock = Clock()
    throttle = small_throttle(clock, per_login=3, per_ip=100)
    for _ in range(3):
        throttle.start_attempt("10.0.0.1", "admin")
    for _ in range(50):
        assert throttle.start_attempt("10.0.0.1", "admin") > 0

    clock.now += 60

    assert throttle.start_attempt("10.0.0.1", "admin") == 0


def test_success_clears_login_failures() -> None:
    clock = Clock()
    throttle = small_throttle(clock)
    for _ in range(2):
        throttle.start_attempt("10.0.0.1", "admin")
    throttle.start_attempt("10.0.0.1", "admin")

    throttle.succeeded("10.0.0.1", "admin")

    assert throttle.start_attempt("10.0.0.1", "admin") == 0
    assert throttle.start_attempt("10.0.0.1", "admin") == 0


def test_success_takes_back_only_its_ip_attempt() -> None:
    clock = Clock()
    throttle = small_throttle(clock, per_login=100, per_ip=3)
    throttle.start_attempt("10.0.0.1", "a")
    throttle.start_attempt("10.0.0.1", "b")
    throttle.start_attempt("10.0.0.1", "admin")

    throttle.succeeded("10.0.0.1", "admin")

    assert throttle.start_attempt("10.0.0.1", "c") == 0
    assert throttle.start_attempt("10.0.0.1", "d") > 0


def test_keys_bounded_least_recent_dropped() -> None:
    clock = Clock()
    window = FailureWindow(limit=1, window=60.0, max_keys=3)
    for key in ("a", "b", "c", "d"):
        window.record(key, clock.now)

    assert len(window) == 3
    assert window.retry_after("a", clock.now) == 0
    assert window.retry_after("d", clock.now) == 60


async def test_login_over_limit_is_429(world: World) -> None:
    throttle = world.client.app[LOGIN_THROTTLE]
    throttle.clock = Clock()
    for _ in range(throttle.per_login.limit):
        throttle.start_attempt("198.51.100.7", "viewer")

    response = await world.client.post(
        "/api/v1/auth/login", json={"login": "viewer", "password": PASSWORD}, headers={"Accept-Language": "en"}
    )

    assert response.status == 429
    assert response.headers["Retry-After"] == "300"
    body = await response.json()
    assert body["error"]["code"] == "too_many_login_attempts"
    assert body["error"]["message"] == "Too many failed logins. Try again in 300 seconds."


async def test_failed_login_counts_toward_limit(world: World) -> None:
    throttle = world.client.app[LOGIN_THROTTLE]
    for _ in range(throttle.per_login.limit - 1):
        throttle.start_attempt("198.51.100.7", "viewer")

    failed = await world.client.post("/api/v1/auth/login", json={"login": "viewer", "password": "wrong password"})
    assert failed.status == 401

    response = await world.client.post("/api/v1/auth/login", json={"login": "viewer", "password": PASSWORD})
    assert response.status == 429


async def test_successful_login_resets_login_count(world: World) -> None:
    throttle = world.client.app[LOGIN_THROTTLE]
    for _ in range(throttle.per_login.limit - 1):
        throttle.start_attempt("198.51.100.7", "viewer")

    response = await world.client.post("/api/v1/auth/login", json={"login": "viewer", "password": PASSWORD})

    assert response.status == 200
    assert throttle.per_login.retry_after("viewer", throttle.clock()) == 0
    assert len(throttle.per_login) == 0


async def test_dashboard_login_over_limit_is_429(world: World) -> None:
    throttle = world.client.app[LOGIN_THROTTLE]
    throttle.clock = Clock()
    for _ in range(throttle.per_login.limit):
        throttle.start_attempt("198.51.100.7", "viewer")

    response = await world.client.post(
        "/dashboard/login?lang=ru", data={"login": "viewer", "password": PASSWORD}, allow_redirects=False
    )

    assert response.status == 429
    assert response.headers["Retry-After"] == "300"
    assert "Слишком много неудачных попыток входа. Повторите через 300 с." in await response.text()
