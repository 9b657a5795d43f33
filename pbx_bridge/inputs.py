"""Checks of untrusted values shared by the admin API and `pbx-bridge load`.

Both entry points write the same tables, so they must accept and normalize the same values:
text the database can store, Asterisk dial strings and website origins.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

# The size of destinations.endpoint in models/.
MAX_DIAL_STRING_LENGTH = 200

# An Asterisk dial string: a channel technology, a slash and a resource, as in PJSIP/office.
# The resource may contain no whitespace and no control characters.
_DIAL_STRING = re.compile(r"[A-Za-z][A-Za-z0-9_-]*/[^\s\x00-\x1f\x7f]+")
# PostgreSQL text cannot contain NUL, and UTF-8 cannot encode an unpaired surrogate, which a
# JSON string can carry as an escape such as "\ud800".
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class InvalidOrigin(ValueError):
    """A value that is not a website origin of the form scheme://host[:port]."""


def is_storable_text(text: str) -> bool:
    """Return False when `text` contains NUL or an unpaired surrogate."""
    return _UNSTORABLE.search(text) is None


def is_dial_string(text: str) -> bool:
    """Return True for TECHNOLOGY/RESOURCE such as "PJSIP/office" that fits the database column."""
    return len(text) <= MAX_DIAL_STRING_LENGTH and _DIAL_STRING.fullmatch(text) is not None


def normalize_origin(text: str) -> str:
    """Return `text` in the form browsers send in the Origin header, or raise InvalidOrigin.

    Browsers send the scheme and host in lower case, an internationalized host in punycode and
    no port when it is the scheme's default, so "https://A.RU:443" becomes "https://a.ru". A
    single trailing slash is dropped. A path, query, fragment or user name is rejected, because
    an Origin header never carries one.
    """
    value = text.strip()
    if value.endswith("/"):
        value = value[:-1]
    if not value or any(char.isspace() or char in "?#@\\/" for char in value.partition("://")[2]):
        raise InvalidOrigin(f"{text!r} is not an origin")
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise InvalidOrigin(f"{text!r} has an invalid port")
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise InvalidOrigin(f"{text!r} is not an http or https origin")

    host = _normalize_host(parts.hostname)
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _normalize_host(hostname: str) -> str:
    if ":" in hostname:
        try:
            return f"[{ipaddress.IPv6Address(hostname).compressed}]"
        except ValueError:
            raise InvalidOrigin(f"{hostname!r} is not an IPv6 address") from None
    try:
        # NOTE: Python's "idna" codec implements IDNA 2003 and browsers UTS 46. They agree on
        # Latin and Cyrillic names but differ for a few characters such as "ß".
        host = hostname.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise InvalidOrigin(f"{hostname!r} is not a host name") from None
    if _HOST_NAME.fullmatch(host) is None:
        raise InvalidOrigin(f"{hostname!r} is not a host name")
    return host
