"""Validation of what the page snippet sends, and the visitor details derived from it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, urlsplit

import ua_parser

# Field limits follow the column sizes of VisitorSession, so nothing is ever truncated on write.
MAX_URL_LENGTH = 2048
MAX_TAG_LENGTH = 200
MAX_CLIENT_ID_LENGTH = 100
MAX_USER_AGENT_LENGTH = 512
MAX_SEARCH_PHRASE_LENGTH = 500
MAX_HOST_LENGTH = 253

UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
CLICK_ID_FIELDS = ("gclid", "yclid", "fbclid", "msclkid")
CLIENT_ID_FIELDS = {"ga": "ga_client_id", "ym_uid": "ym_client_id"}

_VISITOR_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
_SITE_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Click ids and analytics client ids are URL-safe tokens (GA's is like "GA1.1.123.456").
_TOKEN = re.compile(r"[A-Za-z0-9._~-]+")
# UTM tags are free text, but markup and control characters in them are an attack on whoever
# later displays them, not a campaign name.
_HOSTILE_TEXT = re.compile(r"[<>\x00-\x1f\x7f]")
# Control characters: PostgreSQL rejects NUL in text, and the rest only garble a search phrase.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]+")

# Query parameters that carry the search phrase in the referrer of a search engine.
_SEARCH_PARAMETERS = {
    "yandex": "text",
    "ya": "text",
    "google": "q",
    "bing": "q",
    "duckduckgo": "q",
    "go.mail": "q",
    "rambler": "query",
    "yahoo": "p",
}


class InvalidField(ValueError):
    """A field of a tracking request is missing, of the wrong type or not acceptable."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class VisitorData:
    """A session start request, validated, with the details pbx-bridge derives from it."""

    site_key: str
    visitor_id: str
    landing_page: str | None
    referrer: str | None
    referrer_host: str | None
    search_phrase: str | None
    tags: dict[str, str | None]
    user_agent: str | None
    device_type: str | None
    browser: str | None
    os: str | None

    @property
    def landing_host(self) -> str | None:
        return _host(self.landing_page)


def read_site_key(body: dict[str, Any]) -> str:
    site_key = _optional_text(body, "site_key", 64)
    if site_key is None:
        raise InvalidField("site_key", "missing; pass the site key shown in the site settings")
    if not _SITE_KEY.fullmatch(site_key):
        raise InvalidField("site_key", "invalid; expected letters, digits, '-' or '_'")
    return site_key


def read_visitor_id(body: dict[str, Any]) -> str:
    visitor_id = _optional_text(body, "visitor_id", 64)
    if visitor_id is None or not _VISITOR_ID.fullmatch(visitor_id):
        raise InvalidField("visitor_id", "missing or invalid; expected 8 to 64 of A-Z a-z 0-9 - _")
    return visitor_id


def read_session_id(body: dict[str, Any]) -> int:
    value = body.get("session_id")
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**63:
        raise InvalidField("session_id", "missing or invalid; expected a positive integer")
    return value


def read_start_request(body: dict[str, Any], user_agent_header: str | None) -> VisitorData:
    """Validate a session start request and derive referrer host, search phrase and device."""
    site_key = read_site_key(body)
    visitor_id = read_visitor_id(body)
    landing_page = _optional_url(body, "page_url")
    referrer = _optional_url(body, "referrer")

    tags: dict[str, str | None] = {}
    for name in UTM_FIELDS:
        value = _optional_text(body, name, MAX_TAG_LENGTH)
        if value is not None and _HOSTILE_TEXT.search(value):
            raise InvalidField(name, "contains markup or control characters")
        tags[name] = value
    for name in CLICK_ID_FIELDS:
        tags[name] = _optional_token(body, name, MAX_TAG_LENGTH)
    for name, column in CLIENT_ID_FIELDS.items():
        tags[column] = _optional_token(body, name, MAX_CLIENT_ID_LENGTH)

    user_agent = _optional_text(body, "user_agent", MAX_USER_AGENT_LENGTH)
    if user_agent is None and user_agent_header:
        # aiohttp keeps header bytes that are not UTF-8 as lone surrogates, which no database
        # can store, so they become "?".
        user_agent = user_agent_header[:MAX_USER_AGENT_LENGTH].encode("utf-8", "replace").decode("utf-8")
    device_type, browser, os = parse_user_agent(user_agent)

    referrer_host = _host(referrer)
    return VisitorData(
        site_key=site_key,
        visitor_id=visitor_id,
        landing_page=landing_page,
        referrer=referrer,
        referrer_host=referrer_host,
        search_phrase=search_phrase(referrer),
        tags=tags,
        user_agent=user_agent,
        device_type=device_type,
        browser=browser,
        os=os,
    )


@lru_cache(maxsize=4096)
def parse_user_agent(user_agent: str | None) -> tuple[str | None, str | None, str | None]:
    """Return (device type, browser, OS) from the ua-parser rules; device type is one of
    desktop, mobile, tablet or bot."""
    if not user_agent:
        return None, None, None
    result = ua_parser.parse(user_agent)
    browser = result.user_agent.family if result.user_agent else None
    os = result.os.family if result.os else None
    device = result.device
    device_type = "desktop"
    if device is not None and device.family == "Spider":
        device_type = "bot"
    elif device is not None and _is_tablet(device.family, device.brand):
        device_type = "tablet"
    elif os in ("Android", "iOS", "Windows Phone", "BlackBerry OS", "KaiOS", "Symbian OS"):
        device_type = "mobile"
    return device_type, browser, os


def search_phrase(referrer: str | None) -> str | None:
    """Return the search phrase a search engine's referrer carries, if it carries one."""
    if not referrer:
        return None
    parts = urlsplit(referrer)
    host = (parts.hostname or "").removeprefix("www.")
    for engine, parameter in _SEARCH_PARAMETERS.items():
        if host == engine or host.startswith(engine + ".") or f".{engine}." in f".{host}":
            values = parse_qs(parts.query).get(parameter)
            phrase = _CONTROL_CHARACTERS.sub(" ", values[0]).strip() if values else ""
            return phrase[:MAX_SEARCH_PHRASE_LENGTH] or None
    return None


def _is_tablet(family: str | None, brand: str | None) -> bool:
    # ua-parser names tablets by family ("iPad", "Kindle") or by a brand such as
    # "Generic_Android_Tablet".
    text = f"{family or ''} {brand or ''}".lower()
    return "ipad" in text or "tablet" in text or "kindle" in text


def _host(url: str | None) -> str | None:
    if not url:
        return None
    host = urlsplit(url).hostname  # the URL was validated by _optional_url
    # A DNS name has at most 253 characters. A longer "host" belongs to no site and would not
    # fit the 255-character column, so the session keeps the URL without a host.
    if not host or len(host) > MAX_HOST_LENGTH:
        return None
    return host.lower().removeprefix("www.")


def _optional_text(body: dict[str, Any], field: str, max_length: int) -> str | None:
    value = body.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidField(field, f"expected a string, got {type(value).__name__}")
    if len(value) > max_length:
        raise InvalidField(field, f"too long: {len(value)} characters, at most {max_length}")
    if "\x00" in value:
        raise InvalidField(field, "contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidField(field, "contains a lone UTF-16 surrogate, which is not valid text") from None
    return value


def _optional_token(body: dict[str, Any], field: str, max_length: int) -> str | None:
    value = _optional_text(body, field, max_length)
    if value is not None and not _TOKEN.fullmatch(value):
        raise InvalidField(field, "invalid; expected letters, digits and . _ ~ -")
    return value


def _optional_url(body: dict[str, Any], field: str) -> str | None:
    value = _optional_text(body, field, MAX_URL_LENGTH)
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        hostname = parts.hostname
    except ValueError:
        raise InvalidField(field, "malformed URL") from None
    if parts.scheme not in ("http", "https") or not hostname:
        raise InvalidField(field, "invalid; expected an absolute http or https URL")
    if _HOSTILE_TEXT.search(value):
        raise InvalidField(field, "contains markup or control characters")
    return value
