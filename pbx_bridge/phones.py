"""Phone number parsing: E.164 for storage, the raw text kept when a value is not a number."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import phonenumbers

# A caller id longer than this is not a phone number in any plan; the check also bounds parsing cost.
MAX_INPUT_LENGTH = 64


class InvalidNumber(ValueError):
    """A value that should be a phone number is not one."""


class NumberHasExtension(InvalidNumber):
    """A number written with an extension, such as "+7 495 111-00-01 ext 5"."""


@dataclass(frozen=True)
class CallerId:
    """A caller id as Asterisk gave it and, when it is a number, its E.164 form."""

    raw: str
    e164: str | None


# Calls repeat the same dialed numbers and, often, callers: the cache spares parsing them again.
@functools.lru_cache(maxsize=4096)
def to_e164(text: str, region: str = "RU") -> str:
    """Parse a number written in a common human form and return it in E.164.

    National forms such as "8 (495) 111-00-01" are read in `region`; digits without a plus
    that already start with a country code ("74951110001", as trunks send them) are accepted too.
    """
    parsed = _parse(text, region)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def tracking_number_e164(text: str, region: str = "RU") -> str:
    """Parse a tracking number like `to_e164`, but raise NumberHasExtension for a number with an
    extension ("ext 5", "доб. 5", ";ext=5"), which to_e164 would drop.

    Callers dial a tracking number directly and E.164 has no place for an extension, so such a
    value is a mistake in the setup rather than a number to store without its extension.
    """
    parsed = _parse(text, region)
    if parsed.extension:
        raise NumberHasExtension(f"{text!r} has the extension {parsed.extension}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def parse_caller_id(raw: str | None, region: str = "RU") -> CallerId:
    """Read an Asterisk caller id; `anonymous`, empty values and SIP user names keep e164 None."""
    raw = (raw or "").strip()
    try:
        return CallerId(raw=raw, e164=to_e164(raw, region))
    except InvalidNumber:
        return CallerId(raw=raw, e164=None)


def _parse(text: str, region: str) -> phonenumbers.PhoneNumber:
    cleaned = text.strip()
    if not cleaned or len(cleaned) > MAX_INPUT_LENGTH:
        raise InvalidNumber(f"{text!r} is not a phone number")

    for candidate, candidate_region in _candidates(cleaned, region):
        try:
            parsed = phonenumbers.parse(candidate, candidate_region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed):
            return parsed
    raise InvalidNumber(f"{text!r} is not a valid phone number (region {region})")


def _candidates(text: str, region: str) -> list[tuple[str, str | None]]:
    candidates: list[tuple[str, str | None]] = [(text, region)]
    digits = "".join(ch for ch in text if ch.isdigit())
    if not text.startswith("+") and digits == text and len(digits) >= 10:
        candidates.append(("+" + digits, None))
    return candidates
