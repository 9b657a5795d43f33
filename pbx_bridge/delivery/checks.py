"""Checks of delivery settings and webhook definitions, run when they are loaded.

A bad URL or measurement id fails at load time with one line naming the key, not later in the
worker. This module imports only the standard library and `pbx_bridge.config`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pbx_bridge.config import Config, ConfigError

CALL_EVENTS = ("call.started", "call.answered", "call.ended")

# GA4 web data streams have measurement ids such as G-1A2B3C4D5E.
MEASUREMENT_ID = re.compile(r"G-[A-Z0-9]{4,}")
# Measurement Protocol rules for event and parameter names: at most 40 characters, a letter
# first, then letters, digits and underscores.
GA4_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")
GA4_RESERVED_PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")
GA4_RESERVED_EVENTS = frozenset(
    {
        "ad_activeview", "ad_click", "ad_exposure", "ad_impression", "ad_query", "ad_reward",
        "adunit_exposure", "app_background", "app_clear_data", "app_exception", "app_remove",
        "app_store_refund", "app_store_subscription_cancel", "app_store_subscription_convert",
        "app_store_subscription_renew", "app_update", "app_upgrade", "dynamic_link_app_open",
        "dynamic_link_app_update", "dynamic_link_first_open", "error", "first_open",
        "first_visit", "in_app_purchase", "notification_dismiss", "notification_foreground",
        "notification_open", "notification_receive", "os_update", "session_start",
        "session_start_with_rollout", "user_engagement",
    }
)  # fmt: skip
MIN_WEBHOOK_SECRET_LENGTH = 16


class WebhookDefinitionError(ValueError):
    """A webhook definition is invalid; the message names the key and the fix."""


@dataclass(frozen=True)
class WebhookSpec:
    url: str
    secret: str
    events: tuple[str, ...] = CALL_EVENTS
    enabled: bool = True


def check_delivery_config(config: Config, origin: str) -> None:
    """Raise ConfigError for delivery, GA4 or Metrica settings that could never work."""
    # NOTE: a value set by an environment variable is reported under `origin` (the file, or
    # "defaults"), not under the variable as config._check_numbers reports it.
    delivery = config.delivery
    for key in ("poll_interval", "retry_min_delay", "retry_max_delay", "give_up_after", "request_timeout"):
        if getattr(delivery, key) <= 0:
            raise ConfigError(f"{origin}: delivery.{key} must be a positive number of seconds")
    if delivery.retry_min_delay > delivery.retry_max_delay:
        raise ConfigError(
            f"{origin}: delivery.retry_min_delay ({delivery.retry_min_delay}) is greater than "
            f"delivery.retry_max_delay ({delivery.retry_max_delay})"
        )
    if delivery.batch_size < 1:
        raise ConfigError(f"{origin}: delivery.batch_size must be at least 1")

    ga4 = config.ga4
    if ga4.measurement_id:
        if not MEASUREMENT_ID.fullmatch(ga4.measurement_id):
            raise ConfigError(
                f"{origin}: ga4.measurement_id is {ga4.measurement_id!r}; expected a GA4 web "
                "stream measurement id such as G-1A2B3C4D5E (Admin > Data streams)"
            )
        if not ga4.api_secret:
            raise ConfigError(
                f"{origin}: ga4.api_secret is missing; create a Measurement Protocol API secret "
                "for the stream and set it (or PBX_BRIDGE_GA4_API_SECRET)"
            )
    problem = ga4_name_problem(ga4.event_name)
    if problem:
        raise ConfigError(f"{origin}: ga4.event_name is {ga4.event_name!r}: {problem}")
    _check_base_url(ga4.base_url, f"{origin}: ga4.base_url")

    metrica = config.metrica
    if metrica.counter_id:
        if not metrica.counter_id.isdigit():
            raise ConfigError(
                f"{origin}: metrica.counter_id is {metrica.counter_id!r}; expected the counter "
                "number, digits only"
            )
        if not metrica.token:
            raise ConfigError(
                f"{origin}: metrica.token is missing; set an OAuth token with the metrika:write "
                "scope (or PBX_BRIDGE_METRICA_TOKEN)"
            )
    if metrica.batch_size < 1:
        raise ConfigError(f"{origin}: metrica.batch_size must be at least 1")
    if metrica.call_url_template and "{call_id}" not in metrica.call_url_template:
        raise ConfigError(f"{origin}: metrica.call_url_template must contain {{call_id}}")
    _check_base_url(metrica.base_url, f"{origin}: metrica.base_url")


def ga4_name_problem(name: str) -> str | None:
    """Return why `name` breaks the Measurement Protocol's event name rules, or None."""
    if not GA4_NAME.fullmatch(name):
        return "expected at most 40 letters, digits and underscores, starting with a letter"
    if name.startswith(GA4_RESERVED_PREFIXES):
        return f"names starting with {', '.join(GA4_RESERVED_PREFIXES)} are reserved by Google"
    if name in GA4_RESERVED_EVENTS:
        return "the name is reserved by Google Analytics"
    return None


def parse_webhooks(raw: Any, where: str) -> list[WebhookSpec]:
    """Validate the webhook tables of one company from a setup file.

    `where` prefixes messages, for example "tracking.toml: company 'Ромашка'". Keys: url
    (http or https), secret (at least 16 characters), events (default all three), enabled.
    """
    if not isinstance(raw, list):
        raise WebhookDefinitionError(f"{where}: webhooks must be an array of tables")
    specs: list[WebhookSpec] = []
    seen: set[str] = set()
    for index, table in enumerate(raw, start=1):
        at = f"{where}: webhook #{index}"
        if not isinstance(table, dict):
            raise WebhookDefinitionError(f"{at} must be a table")
        unknown = sorted(set(table) - {"url", "secret", "events", "enabled"})
        if unknown:
            raise WebhookDefinitionError(
                f"{at}: unknown key {unknown[0]!r}; expected url, secret, events, enabled"
            )
        url = table.get("url")
        if not isinstance(url, str):
            raise WebhookDefinitionError(f"{at}: url is missing or not a string")
        problem = url_problem(url)
        if problem:
            raise WebhookDefinitionError(f"{at}: url {url_for_message(url)!r} is invalid: {problem}")
        if url in seen:
            raise WebhookDefinitionError(
                f"{at}: url {url_for_message(url)!r} is listed twice for this company"
            )
        seen.add(url)

        secret = table.get("secret")
        if not isinstance(secret, str) or len(secret) < MIN_WEBHOOK_SECRET_LENGTH:
            raise WebhookDefinitionError(
                f"{at}: secret is missing or shorter than {MIN_WEBHOOK_SECRET_LENGTH} characters"
            )
        events = table.get("events", list(CALL_EVENTS))
        if not isinstance(events, list) or not events:
            raise WebhookDefinitionError(f"{at}: events must be a non-empty array of event names")
        for event in events:
            if event not in CALL_EVENTS:
                raise WebhookDefinitionError(
                    f"{at}: event {event!r} is unknown; expected {', '.join(CALL_EVENTS)}"
                )
        enabled = table.get("enabled", True)
        if not isinstance(enabled, bool):
            raise WebhookDefinitionError(f"{at}: enabled must be true or false")
        specs.append(WebhookSpec(url, secret, tuple(dict.fromkeys(events)), enabled))
    return specs


def url_for_message(url: str) -> str:
    """Return `url` with any user name and password replaced by "***", for error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or "@" not in parts.netloc:
        # A value that urlsplit cannot split is hidden whole when it contains "@", because its
        # credentials cannot be told apart from the rest.
        return url if "@" not in url else "(not shown, it may contain credentials)"
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"***@{host}").geturl()


def url_problem(url: str) -> str | None:
    """Return why `url` cannot be a receiver URL, or None."""
    try:
        parts = urlsplit(url)
        parts.port
    except ValueError as error:
        return str(error)
    if parts.scheme not in ("http", "https"):
        return "expected an http:// or https:// URL"
    if not parts.hostname:
        return "the host is missing"
    if parts.username or parts.password:
        return "credentials in the URL would be logged; use the webhook secret instead"
    if any(character.isspace() for character in url):
        return "the URL contains whitespace"
    return None


def _check_base_url(url: str, where: str) -> None:
    problem = url_problem(url)
    if problem:
        raise ConfigError(f"{where} is {url_for_message(url)!r}: {problem}")
