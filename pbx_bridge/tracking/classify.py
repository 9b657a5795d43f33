"""Classification of a visitor session to one of the company's sources by its match rules."""

from __future__ import annotations

from pbx_bridge.tracking.sites import SiteSettings, SourceRule
from pbx_bridge.tracking.visitor import VisitorData

# Auto-tagged ad clicks carry a click id and no UTM tags; each click id implies the ad network.
_CLICK_ID_SOURCES = {
    "gclid": ("google", "cpc"),
    "yclid": ("yandex", "cpc"),
    "fbclid": ("facebook", "cpc"),
    "msclkid": ("bing", "cpc"),
}


def classify_source(settings: SiteSettings, data: VisitorData) -> int | None:
    """Return the source id of the session: the first matching rule by priority, else the
    site's direct source for a visit with no campaign and no outside referrer, else the
    site's default source."""
    utm_source = _lowered(data.tags.get("utm_source"))
    utm_medium = _lowered(data.tags.get("utm_medium"))
    utm_campaign = _lowered(data.tags.get("utm_campaign"))
    if utm_source is None:
        for click_id, (network, medium) in _CLICK_ID_SOURCES.items():
            if data.tags.get(click_id):
                utm_source, utm_medium = network, utm_medium or medium
                break

    for rule in settings.rules:
        if _matches(rule, utm_source, utm_medium, utm_campaign, data.referrer_host):
            return rule.source_id

    internal_referrer = data.referrer_host is None or data.referrer_host == data.landing_host
    if utm_source is None and utm_medium is None and utm_campaign is None and internal_referrer:
        return settings.direct_source_id
    return settings.default_source_id


def _matches(
    rule: SourceRule,
    utm_source: str | None,
    utm_medium: str | None,
    utm_campaign: str | None,
    referrer_host: str | None,
) -> bool:
    criteria = (rule.utm_source, rule.utm_medium, rule.utm_campaign, rule.referrer_host)
    if all(value is None for value in criteria):
        return False
    if rule.utm_source is not None and rule.utm_source != utm_source:
        return False
    if rule.utm_medium is not None and rule.utm_medium != utm_medium:
        return False
    if rule.utm_campaign is not None and rule.utm_campaign != utm_campaign:
        return False
    if rule.referrer_host is not None:
        host = referrer_host or ""
        if host != rule.referrer_host and not host.endswith("." + rule.referrer_host):
            return False
    return True


def _lowered(value: str | None) -> str | None:
    return value.strip().lower() if value and value.strip() else None
