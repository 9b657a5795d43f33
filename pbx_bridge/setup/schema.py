"""The setup file format: checks the parsed TOML and turns it into plain specs for the loader.

Every problem is collected with the key path where it sits, so the operator sees all of them at
once, each with its line. Nothing here touches the database.
"""

from __future__ import annotations

import difflib
import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from models import ExhaustedPolicy, SourceKind
from pbx_bridge.delivery.checks import (
    CALL_EVENTS,
    MIN_WEBHOOK_SECRET_LENGTH,
    WebhookDefinitionError,
    WebhookSpec,
    parse_webhooks,
    url_for_message,
    url_problem,
)
from pbx_bridge.inputs import (
    MAX_DIAL_STRING_LENGTH,
    InvalidOrigin,
    is_dial_string,
    normalize_origin,
)
from pbx_bridge.phones import InvalidNumber, NumberHasExtension, tracking_number_e164
from pbx_bridge.setup.positions import KeyPath

# Defaults of optional keys; they match the column defaults in models/.
DEFAULT_TIMEZONE = "Europe/Moscow"
DEFAULT_RING_TIMEOUT = 20
DEFAULT_PRIORITY = 100
DEFAULT_HOLD_TIME = 900
DEFAULT_HEARTBEAT_INTERVAL = 30
DEFAULT_CURRENCY = "RUB"

# Column sizes in models/, so a long value fails here with its line and not in the database.
MAX_NAME_LENGTH = 200
MAX_ENDPOINT_LENGTH = MAX_DIAL_STRING_LENGTH
MAX_MATCH_LENGTH = 200
MAX_HOST_LENGTH = 255
MAX_DISPLAY_FORMAT_LENGTH = 64
MIN_SITE_KEY_LENGTH = 8
MAX_SITE_KEY_LENGTH = 64
MAX_WEBHOOK_URL_LENGTH = 2000
MAX_WEBHOOK_SECRET_LENGTH = 200
# Numeric(14, 2) in source_spend.amount.
MAX_AMOUNT = Decimal("999999999999.99")

_SITE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_HOST = re.compile(r"^[A-Za-z0-9.-]+$")
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Problem:
    """One invalid value: where it is in the file and what is wrong with it."""

    path: KeyPath
    message: str
    # For a duplicate: where the value appears first, so the message can name both lines.
    first_path: KeyPath | None = None


class SetupError(Exception):
    """The setup file cannot be loaded; `problems` lists every reason with its key path."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(problem.message for problem in problems))
        self.problems = problems


@dataclass(frozen=True)
class DestinationSpec:
    endpoint: str
    ring_timeout: int | None


@dataclass(frozen=True)
class SpendSpec:
    start: date
    end: date
    amount: Decimal
    currency: str


@dataclass(frozen=True)
class SourceSpec:
    name: str
    kind: str
    dynamic: bool
    utm_source: str | None
    utm_medium: str | None
    utm_campaign: str | None
    referrer_host: str | None
    priority: int
    spend: tuple[SpendSpec, ...]


@dataclass(frozen=True)
class NumberSpec:
    """A static number in E.164 and the name of its source."""

    number: str
    source: str
    path: KeyPath


@dataclass(frozen=True)
class PoolSpec:
    name: str
    hold_time: int
    heartbeat_interval: int
    exhausted_policy: str
    numbers: tuple[str, ...]
    number_paths: tuple[KeyPath, ...]


@dataclass(frozen=True)
class SiteSpec:
    name: str
    # None means: keep the key the site already has, or generate one for a new site.
    site_key: str | None
    allowed_origins: tuple[str, ...]
    default_number: str | None
    display_format: str | None
    direct_source: str | None
    default_source: str | None
    pools: tuple[PoolSpec, ...]
    path: KeyPath


@dataclass(frozen=True)
class CompanySpec:
    name: str
    timezone: str
    ring_timeout: int
    recording: bool
    destinations: tuple[DestinationSpec, ...]
    sources: tuple[SourceSpec, ...]
    numbers: tuple[NumberSpec, ...]
    sites: tuple[SiteSpec, ...]
    # None when the company has no webhooks key, so the loader leaves its webhooks as they are.
    webhooks: tuple[WebhookSpec, ...] | None


@dataclass(frozen=True)
class SetupSpec:
    """Everything one setup file declares."""

    companies: tuple[CompanySpec, ...]

    @property
    def all_numbers(self) -> list[str]:
        numbers: list[str] = []
        for company in self.companies:
            numbers.extend(spec.number for spec in company.numbers)
            for site in company.sites:
                for pool in site.pools:
                    numbers.extend(pool.numbers)
        return numbers


def parse_setup(document: Mapping[str, Any], region: str) -> SetupSpec:
    """Check a parsed setup file and return its specs; raise SetupError listing every problem.

    Phone numbers in national form are read in `region` (calls.default_region).
    """
    checker = _Checker(region)
    spec = checker.read_document(document)
    if checker.problems:
        raise SetupError(checker.problems)
    return spec


# Keys each table accepts, for the unknown-key check.
_DOCUMENT_KEYS = ("companies",)
_COMPANY_KEYS = (
    "name", "timezone", "ring_timeout", "recording", "destinations", "sources", "numbers", "sites",
    "webhooks",
)
_DESTINATION_KEYS = ("endpoint", "ring_timeout")
_SOURCE_KEYS = ("name", "kind", "dynamic", "match", "priority", "spend")
_MATCH_KEYS = ("utm_source", "utm_medium", "utm_campaign", "referrer_host")
_SPEND_KEYS = ("start", "end", "amount", "currency")
_NUMBER_KEYS = ("number", "source")
_SITE_KEYS = (
    "name", "site_key", "allowed_origins", "default_number", "display_format", "direct_source",
    "default_source", "pools",
)
_POOL_KEYS = ("name", "hold_time", "heartbeat_interval", "exhausted_policy", "numbers")
_WEBHOOK_KEYS = ("url", "secret", "events", "enabled")


@dataclass
class _Checker:
    region: str
    problems: list[Problem] = field(default_factory=list)
    # The first place of each E.164 number in the file, to report duplicates in any written form.
    number_paths: dict[str, KeyPath] = field(default_factory=dict)
    site_key_paths: dict[str, KeyPath] = field(default_factory=dict)
    # Keys and values already reported for a NUL character; other checks stay silent on them.
    nul_paths: set[KeyPath] = field(default_factory=set)

    def fail(self, path: KeyPath, message: str, *, first_path: KeyPath | None = None) -> None:
        if path in self.nul_paths:
            return
        self.problems.append(Problem(path, message, first_path))

    # -- document structure --------------------------------------------------------------

    def read_document(self, document: Mapping[str, Any]) -> SetupSpec:
        self.reject_nul_characters(document)
        self.reject_unknown_keys(document, (), _DOCUMENT_KEYS, "the file")
        tables = self.table_list(document, (), "companies", "the file", required=True)
        companies: list[CompanySpec] = []
        seen: dict[str, KeyPath] = {}
        for index, table in tables:
            path = ("companies", index)
            company = self.read_company(table, path)
            if company is None:
                continue
            if company.name in seen:
                self.fail(
                    path + ("name",),
                    f'company "{company.name}" is declared twice',
                    first_path=seen[company.name] + ("name",),
                )
                continue
            seen[company.name] = path
            companies.append(company)
        return SetupSpec(tuple(companies))

    def reject_nul_characters(self, document: Mapping[str, Any]) -> None:
        """Report every key and string that contains NUL, which PostgreSQL cannot store in text.

        TOML allows NUL as the escape \\u0000, so without this walk the file would pass every
        other check and fail only when the database rejects the row. The walk keeps its own
        stack, so deep nesting cannot exceed Python's recursion limit.
        """
        stack: list[tuple[KeyPath, Any]] = [((), document)]
        while stack:
            path, value = stack.pop()
            if isinstance(value, str):
                if "\x00" in value:
                    message = "contains a NUL character (\\u0000), which the database cannot store"
                    self.fail(path, f"{_key_path_text(path)} {message}; remove it")
                    self.nul_paths.add(path)
                continue
            if isinstance(value, dict):
                children = list(value.items())
            elif isinstance(value, list):
                children = list(enumerate(value))
            else:
                continue
            # Reversed, so the stack yields the children and their problems in file order.
            for key, child in reversed(children):
                child_path = path + (key,)
                if isinstance(key, str) and "\x00" in key:
                    parent = _key_path_text(path) or "the file"
                    self.fail(child_path, f"a key in {parent} contains a NUL character (\\u0000); remove it")
                    self.nul_paths.add(child_path)
                    continue
                stack.append((child_path, child))

    def read_company(self, table: Mapping[str, Any], path: KeyPath) -> CompanySpec | None:
        name = self.text(table, path, "name", "company", required=True, max_length=MAX_NAME_LENGTH)
        where = f'company "{name}"' if name else "company"
        self.reject_unknown_keys(table, path, _COMPANY_KEYS, where)

        timezone = self.text(table, path, "timezone", where)
        if timezone is not None and not self.check_timezone(timezone, path + ("timezone",), where):
            timezone = None
        ring_timeout = self.integer(table, path, "ring_timeout", where, minimum=1)
        recording = self.boolean(table, path, "recording", where)
        destinations = self.read_destinations(table, path, where)

        sources = self.read_named_list(
            table, path, "sources", where, "source", self.read_source
        )
        source_names = {source.name for source in sources}
        numbers = self.read_static_numbers(table, path, where, source_names)
        static_numbers = {number.number for number in numbers}
        sites = self.read_named_list(
            table,
            path,
            "sites",
            where,
            "site",
            lambda site_table, site_path: self.read_site(
                site_table, site_path, source_names, static_numbers
            ),
        )
        webhooks = self.read_webhooks(table, path, where)

        if name is None:
            return None
        return CompanySpec(
            name=name,
            timezone=timezone or DEFAULT_TIMEZONE,
            ring_timeout=DEFAULT_RING_TIMEOUT if ring_timeout is None else ring_timeout,
            recording=True if recording is None else recording,
            destinations=tuple(destinations),
            sources=tuple(sources),
            numbers=tuple(numbers),
            sites=tuple(sites),
            webhooks=webhooks,
        )

    def read_destinations(
        self, table: Mapping[str, Any], path: KeyPath, where: str
    ) -> list[DestinationSpec]:
        key_path = path + ("destinations",)
        value = table.get("destinations")
        if value is None:
            self.fail(
                path,
                f'{where}: missing key "destinations", expected a list of Asterisk dial strings '
                'such as ["PJSIP/office"]',
            )
            return []
        if not isinstance(value, list) or not value:
            self.fail(
                key_path,
                f"{where}: destinations is {_describe(value)}, expected a non-empty list of "
                'Asterisk dial strings such as ["PJSIP/office"]',
            )
            return []

        destinations: list[DestinationSpec] = []
        for index, item in enumerate(value):
            item_path = key_path + (index,)
            if isinstance(item, str):
                endpoint: str | None = item
                ring_timeout = None
            elif isinstance(item, dict):
                self.reject_unknown_keys(item, item_path, _DESTINATION_KEYS, f"{where}: destination")
                endpoint = self.text(item, item_path, "endpoint", f"{where}: destination", required=True)
                ring_timeout = self.integer(
                    item, item_path, "ring_timeout", f"{where}: destination", minimum=1
                )
            else:
                self.fail(
                    item_path,
                    f"{where}: destination is {_describe(item)}, expected a dial string such as "
                    '"PJSIP/office" or a table such as { endpoint = "PJSIP/office", ring_timeout = 15 }',
                )
                continue
            if endpoint is None:
                continue
            if not is_dial_string(endpoint):
                self.fail(
                    item_path,
                    f"{where}: destination {_show(endpoint)} is not an Asterisk dial string, "
                    'expected TECHNOLOGY/RESOURCE such as "PJSIP/office" or "PJSIP/+74951234567@trunk"',
                )
                continue
            destinations.append(DestinationSpec(endpoint, ring_timeout))
        return destinations

    def read_source(self, table: Mapping[str, Any], path: KeyPath) -> SourceSpec | None:
        name = self.text(table, path, "name", "source", required=True, max_length=MAX_NAME_LENGTH)
        where = f'source "{name}"' if name else "source"
        self.reject_unknown_keys(table, path, _SOURCE_KEYS, where, parent=("company", _COMPANY_KEYS))

        kind = self.choice(table, path, "kind", where, [kind.value for kind in SourceKind])
        kind = kind or SourceKind.OFFLINE.value
        dynamic = bool(self.boolean(table, path, "dynamic", where))
        if dynamic and kind != SourceKind.ONLINE.value:
            self.fail(
                path + ("dynamic",),
                f'{where}: dynamic = true needs kind = "online", because only website visitors '
                "get pool numbers",
            )
        priority = self.integer(table, path, "priority", where)
        rules = self.read_match(table, path, where, kind)
        spend = self.read_spend(table, path, where)

        if name is None:
            return None
        return SourceSpec(
            name=name,
            kind=kind,
            dynamic=dynamic,
            utm_source=rules.get("utm_source"),
            utm_medium=rules.get("utm_medium"),
            utm_campaign=rules.get("utm_campaign"),
            referrer_host=rules.get("referrer_host"),
            priority=DEFAULT_PRIORITY if priority is None else priority,
            spend=tuple(spend),
        )

    def read_match(
        self, table: Mapping[str, Any], path: KeyPath, where: str, kind: str
    ) -> dict[str, str]:
        if "match" not in table:
            return {}
        match_path = path + ("match",)
        match = table["match"]
        if not isinstance(match, dict):
            self.fail(
                match_path,
                f"{where}: match is {_describe(match)}, expected a table such as "
                '{ utm_source = "yandex", utm_medium = "cpc" }',
            )
            return {}
        self.reject_unknown_keys(match, match_path, _MATCH_KEYS, f"{where}: match")
        if kind != SourceKind.ONLINE.value:
            self.fail(
                match_path,
                f'{where}: match rules need kind = "online", because they are compared with '
                "website visits",
            )
        rules: dict[str, str] = {}
        for key in _MATCH_KEYS:
            limit = MAX_HOST_LENGTH if key == "referrer_host" else MAX_MATCH_LENGTH
            value = self.text(match, match_path, key, f"{where}: match", max_length=limit)
            if value is not None:
                rules[key] = value
        host = rules.get("referrer_host")
        if host is not None and not _HOST.match(host):
            self.fail(
                match_path + ("referrer_host",),
                f"{where}: referrer_host {_show(host)} is not a host name, expected a name such "
                'as "yandex.ru" without scheme or path',
            )
            rules.pop("referrer_host")
        return rules

    def read_spend(self, table: Mapping[str, Any], path: KeyPath, where: str) -> list[SpendSpec]:
        periods: list[tuple[SpendSpec, KeyPath]] = []
        for index, item in self.table_list(table, path, "spend", where):
            item_path = path + ("spend", index)
            spend_where = f"{where}: spend"
            self.reject_unknown_keys(item, item_path, _SPEND_KEYS, spend_where)
            start = self.day(item, item_path, "start", spend_where)
            end = self.day(item, item_path, "end", spend_where)
            amount = self.amount(item, item_path, spend_where)
            currency = self.text(item, item_path, "currency", spend_where) or DEFAULT_CURRENCY
            if not _CURRENCY.match(currency):
                self.fail(
                    item_path + ("currency",),
                    f"{spend_where}: currency {_show(currency)} is invalid, expected a three-letter "
                    'ISO 4217 code such as "RUB"',
                )
                continue
            if start is None or end is None or amount is None:
                continue
            if end < start:
                self.fail(
                    item_path + ("end",),
                    f"{spend_where}: end {end} is before start {start}",
                )
                continue
            periods.append((SpendSpec(start, end, amount, currency), item_path))

        periods.sort(key=lambda pair: pair[0].start)
        for (previous, _), (current, current_path) in zip(periods, periods[1:]):
            if current.start <= previous.end:
                self.fail(
                    current_path + ("start",),
                    f"{where}: spend period {current.start}..{current.end} overlaps "
                    f"{previous.start}..{previous.end}, so the money would be counted twice",
                )
        return [spend for spend, _ in periods]

    def read_static_numbers(
        self, table: Mapping[str, Any], path: KeyPath, where: str, source_names: set[str]
    ) -> list[NumberSpec]:
        numbers: list[NumberSpec] = []
        for index, item in self.table_list(table, path, "numbers", where):
            item_path = path + ("numbers", index)
            number_where = f"{where}: number"
            self.reject_unknown_keys(item, item_path, _NUMBER_KEYS, number_where)
            number = self.phone(item, item_path, "number", number_where)
            source = self.text(item, item_path, "source", number_where, required=True)
            if source is not None and source not in source_names:
                self.fail(
                    item_path + ("source",),
                    f"{number_where}: unknown source {_show(source)}, expected one of the "
                    f"company's sources: {_names(source_names)}",
                )
                continue
            if number is not None and source is not None:
                numbers.append(NumberSpec(number, source, item_path))
        return numbers

    def read_site(
        self,
        table: Mapping[str, Any],
        path: KeyPath,
        source_names: set[str],
        static_numbers: set[str],
    ) -> SiteSpec | None:
        name = self.text(table, path, "name", "site", required=True, max_length=MAX_NAME_LENGTH)
        where = f'site "{name}"' if name else "site"
        self.reject_unknown_keys(table, path, _SITE_KEYS, where, parent=("company", _COMPANY_KEYS))

        site_key = self.read_site_key(table, path, where)
        origins = self.read_origins(table, path, where)
        default_number = self.read_default_number(table, path, where, static_numbers)
        display_format = self.text(
            table, path, "display_format", where, max_length=MAX_DISPLAY_FORMAT_LENGTH
        )
        if display_format is not None and "X" not in display_format:
            self.fail(
                path + ("display_format",),
                f"{where}: display_format {_show(display_format)} has no X, expected a pattern "
                'such as "+7 (XXX) XXX-XX-XX" where each X takes the next digit',
            )
        direct_source = self.source_reference(table, path, "direct_source", where, source_names)
        default_source = self.source_reference(table, path, "default_source", where, source_names)

        pools = self.read_named_list(
            table,
            path,
            "pools",
            where,
            "pool",
            lambda pool_table, pool_path: self.read_pool(
                pool_table, pool_path, has_default_number="default_number" in table
            ),
        )

        if name is None:
            return None
        return SiteSpec(
            name=name,
            site_key=site_key,
            allowed_origins=tuple(origins),
            default_number=default_number,
            display_format=display_format,
            direct_source=direct_source,
            default_source=default_source,
            pools=tuple(pools),
            path=path,
        )

    def read_site_key(self, table: Mapping[str, Any], path: KeyPath, where: str) -> str | None:
        site_key = self.text(table, path, "site_key", where)
        if site_key is None:
            return None
        key_path = path + ("site_key",)
        if not (MIN_SITE_KEY_LENGTH <= len(site_key) <= MAX_SITE_KEY_LENGTH) or not _SITE_KEY.match(
            site_key
        ):
            self.fail(
                key_path,
                f"{where}: site_key {_show(site_key)} is invalid, expected {MIN_SITE_KEY_LENGTH} to "
                f"{MAX_SITE_KEY_LENGTH} characters of A-Z, a-z, 0-9, _ and -, or no site_key to "
                "have one generated",
            )
            return None
        if site_key in self.site_key_paths:
            self.fail(
                key_path,
                f"{where}: site_key {_show(site_key)} is used by another site too",
                first_path=self.site_key_paths[site_key],
            )
            return None
        self.site_key_paths[site_key] = key_path
        return site_key

    def read_origins(self, table: Mapping[str, Any], path: KeyPath, where: str) -> list[str]:
        value = table.get("allowed_origins", [])
        key_path = path + ("allowed_origins",)
        if not isinstance(value, list):
            self.fail(
                key_path,
                f"{where}: allowed_origins is {_describe(value)}, expected a list such as "
                '["https://example.ru"]',
            )
            return []
        origins: list[str] = []
        for index, origin in enumerate(value):
            try:
                if not isinstance(origin, str):
                    raise InvalidOrigin(origin)
                normalized = normalize_origin(origin)
            except InvalidOrigin:
                self.fail(
                    key_path + (index,),
                    f"{where}: allowed origin {_describe(origin)} is invalid, expected "
                    'scheme://host[:port] without a path, such as "https://example.ru"',
                )
                continue
            if normalized not in origins:
                origins.append(normalized)
        return origins

    def read_default_number(
        self, table: Mapping[str, Any], path: KeyPath, where: str, static_numbers: set[str]
    ) -> str | None:
        if "default_number" not in table:
            return None
        number = self.phone(table, path, "default_number", where, claim=False)
        if number is not None and number not in static_numbers:
            self.fail(
                path + ("default_number",),
                f"{where}: default_number {number} is not among the company's static numbers, "
                "expected a number listed under numbers with its source",
            )
            return None
        return number

    def read_pool(
        self, table: Mapping[str, Any], path: KeyPath, *, has_default_number: bool
    ) -> PoolSpec | None:
        name = self.text(table, path, "name", "pool", required=True, max_length=MAX_NAME_LENGTH)
        where = f'pool "{name}"' if name else "pool"
        self.reject_unknown_keys(table, path, _POOL_KEYS, where, parent=("site", _SITE_KEYS))

        hold_time = self.integer(table, path, "hold_time", where, minimum=0)
        heartbeat = self.integer(table, path, "heartbeat_interval", where, minimum=1)
        policy = self.choice(
            table, path, "exhausted_policy", where, [policy.value for policy in ExhaustedPolicy]
        )
        if "exhausted_policy" not in table or policy == ExhaustedPolicy.DEFAULT_NUMBER.value:
            if not has_default_number:
                self.fail(
                    path + ("exhausted_policy",),
                    f'{where}: exhausted_policy "default-number" (the default) needs the site\'s '
                    'default_number. Set default_number on the site or exhausted_policy = "reuse"',
                )

        numbers: list[str] = []
        number_paths: list[KeyPath] = []
        value = table.get("numbers", [])
        numbers_path = path + ("numbers",)
        if not isinstance(value, list):
            self.fail(
                numbers_path,
                f"{where}: numbers is {_describe(value)}, expected a list of phone numbers",
            )
            value = []
        for index, item in enumerate(value):
            number = self.phone_value(item, numbers_path + (index,), f"{where}: number")
            if number is not None:
                numbers.append(number)
                number_paths.append(numbers_path + (index,))

        if name is None:
            return None
        return PoolSpec(
            name=name,
            hold_time=DEFAULT_HOLD_TIME if hold_time is None else hold_time,
            heartbeat_interval=DEFAULT_HEARTBEAT_INTERVAL if heartbeat is None else heartbeat,
            exhausted_policy=policy or ExhaustedPolicy.DEFAULT_NUMBER.value,
            numbers=tuple(numbers),
            number_paths=tuple(number_paths),
        )

    # -- webhooks --------------------------------------------------------------------------

    def read_webhooks(
        self, table: Mapping[str, Any], path: KeyPath, where: str
    ) -> tuple[WebhookSpec, ...] | None:
        """Check the company's webhook tables and return their specs, or None without the key."""
        if "webhooks" not in table:
            return None
        problem_count = len(self.problems)
        elements = self.table_list(table, path, "webhooks", where)
        url_paths: dict[str, KeyPath] = {}
        for index, webhook in elements:
            self.check_webhook(webhook, path + ("webhooks", index), where, url_paths)
        if len(self.problems) > problem_count:
            return None

        # The checks above report each problem at its key. parse_webhooks applies the delivery
        # package's rules once more and builds the specs, so a rule added there is not skipped.
        try:
            specs = parse_webhooks([webhook for _, webhook in elements], where)
        except WebhookDefinitionError as error:
            self.fail(path + ("webhooks",), str(error))
            return None
        return tuple(specs)

    def check_webhook(
        self,
        table: Mapping[str, Any],
        path: KeyPath,
        company_where: str,
        url_paths: dict[str, KeyPath],
    ) -> None:
        """Report every invalid key of one webhook table. No message contains the secret."""
        url = table.get("url")
        where = f"{company_where}: webhook"
        if isinstance(url, str):
            where = f"{where} {_show(url_for_message(url))}"
        self.reject_unknown_keys(
            table, path, _WEBHOOK_KEYS, where, parent=("company", _COMPANY_KEYS)
        )

        if "url" not in table:
            self.fail(path, f'{where}: missing key "url", expected an http:// or https:// URL')
        elif not isinstance(url, str):
            self.fail(path + ("url",), f"{where}: url is {_describe(url)}, expected a string")
        elif len(url) > MAX_WEBHOOK_URL_LENGTH:
            self.fail(
                path + ("url",),
                f"{where}: url is {len(url)} characters long, expected at most "
                f"{MAX_WEBHOOK_URL_LENGTH}",
            )
        elif problem := url_problem(url):
            self.fail(path + ("url",), f"{where}: url is invalid: {problem}")
        elif url in url_paths:
            self.fail(
                path + ("url",),
                f"{where}: url is listed twice for this company",
                first_path=url_paths[url],
            )
        else:
            url_paths[url] = path + ("url",)

        self.check_webhook_secret(table, path, where)
        self.check_webhook_events(table, path, where)
        self.boolean(table, path, "enabled", where)

    def check_webhook_secret(self, table: Mapping[str, Any], path: KeyPath, where: str) -> None:
        expected = (
            f"expected a random string of {MIN_WEBHOOK_SECRET_LENGTH} to "
            f"{MAX_WEBHOOK_SECRET_LENGTH} characters, such as the output of: openssl rand -hex 32"
        )
        if "secret" not in table:
            self.fail(path, f'{where}: missing key "secret", {expected}')
            return
        secret = table["secret"]
        # Messages name the secret's type and length only, because they are printed and logged.
        if not isinstance(secret, str):
            self.fail(path + ("secret",), f"{where}: secret is {_type_name(secret)}, {expected}")
        elif not MIN_WEBHOOK_SECRET_LENGTH <= len(secret) <= MAX_WEBHOOK_SECRET_LENGTH:
            self.fail(
                path + ("secret",),
                f"{where}: secret is {len(secret)} characters long, {expected}",
            )

    def check_webhook_events(self, table: Mapping[str, Any], path: KeyPath, where: str) -> None:
        if "events" not in table:
            return
        events = table["events"]
        key_path = path + ("events",)
        names = ", ".join(f'"{event}"' for event in CALL_EVENTS)
        if not isinstance(events, list) or not events:
            found = "empty" if events == [] else _describe(events)
            self.fail(
                key_path,
                f"{where}: events is {found}, expected a list of one or more of {names}, or no "
                "events key to receive all of them",
            )
            return
        for index, event in enumerate(events):
            if event in CALL_EVENTS:
                continue
            if isinstance(event, str):
                found = f"event {_show(event)} is unknown"
            else:
                found = f"event is {_describe(event)}"
            self.fail(key_path + (index,), f"{where}: {found}, expected one of {names}")

    # -- shared shapes ---------------------------------------------------------------------

    def read_named_list(
        self,
        table: Mapping[str, Any],
        path: KeyPath,
        key: str,
        where: str,
        noun: str,
        read: Callable[[Mapping[str, Any], KeyPath], Any],
    ) -> list[Any]:
        """Read an array of tables whose elements are keyed by name, rejecting repeated names."""
        items: list[Any] = []
        seen: dict[str, KeyPath] = {}
        for index, item_table in self.table_list(table, path, key, where):
            item_path = path + (key, index)
            item = read(item_table, item_path)
            if item is None:
                continue
            if item.name in seen:
                self.fail(
                    item_path + ("name",),
                    f'{where}: {noun} "{item.name}" is declared twice',
                    first_path=seen[item.name],
                )
                continue
            seen[item.name] = item_path + ("name",)
            items.append(item)
        return items

    def table_list(
        self,
        table: Mapping[str, Any],
        path: KeyPath,
        key: str,
        where: str,
        *,
        required: bool = False,
    ) -> list[tuple[int, dict[str, Any]]]:
        """Return the elements of an array of tables with their indexes; report other shapes."""
        if key not in table:
            if required:
                self.fail(path, f'{where}: missing "{key}", expected at least one [[{key}]] table')
            return []
        value = table[key]
        if not isinstance(value, list):
            self.fail(
                path + (key,),
                f"{where}: {key} is {_describe(value)}, expected an array of tables "
                f"([[...{key}]] sections or a list of {{ ... }} tables)",
            )
            return []
        elements: list[tuple[int, dict[str, Any]]] = []
        for index, item in enumerate(value):
            if isinstance(item, dict):
                elements.append((index, item))
            else:
                self.fail(
                    path + (key, index),
                    f"{where}: element of {key} is {_describe(item)}, expected a table",
                )
        return elements

    def reject_unknown_keys(
        self,
        table: Mapping[str, Any],
        path: KeyPath,
        allowed: tuple[str, ...],
        where: str,
        *,
        parent: tuple[str, tuple[str, ...]] | None = None,
    ) -> None:
        """Report keys outside `allowed`; `parent` is the enclosing table's noun and keys.

        A parent's key written after a [[...]] header is a common slip, because TOML puts every
        key after a header into that section. The message then names the table the key belongs to.
        """
        for key in table:
            if key in allowed:
                continue
            if parent is not None and key in parent[1]:
                noun = parent[0]
                self.fail(
                    path + (key,),
                    f'{where}: "{key}" is a key of the {noun}. Move it above the {noun}\'s first '
                    "[[...]] section, because TOML puts every key after a section header into "
                    "that section",
                )
                continue
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            self.fail(
                path + (key,),
                f'{where}: unknown key "{key}"{hint}, expected one of: {", ".join(allowed)}',
            )

    # -- scalar values ---------------------------------------------------------------------

    def text(
        self,
        table: Mapping[str, Any],
        path: KeyPath,
        key: str,
        where: str,
        *,
        required: bool = False,
        max_length: int = MAX_NAME_LENGTH,
    ) -> str | None:
        if key not in table:
            if required:
                self.fail(path, f'{where}: missing key "{key}", expected a string')
            return None
        value = table[key]
        if not isinstance(value, str):
            self.fail(path + (key,), f"{where}: {key} is {_describe(value)}, expected a string")
            return None
        stripped = value.strip()
        if "\x00" in stripped:
            # reject_nul_characters has reported it.
            return None
        if not stripped:
            self.fail(path + (key,), f"{where}: {key} is empty, expected a non-empty string")
            return None
        if len(stripped) > max_length:
            self.fail(
                path + (key,),
                f"{where}: {key} is {len(stripped)} characters long, expected at most {max_length}",
            )
            return None
        return stripped

    def integer(
        self,
        table: Mapping[str, Any],
        path: KeyPath,
        key: str,
        where: str,
        *,
        minimum: int | None = None,
    ) -> int | None:
        if key not in table:
            return None
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path + (key,), f"{where}: {key} is {_describe(value)}, expected an integer")
            return None
        if minimum is not None and value < minimum:
            self.fail(path + (key,), f"{where}: {key} is {value}, expected at least {minimum}")
            return None
        # PostgreSQL's integer is 32 bits.
        if value > 2**31 - 1:
            self.fail(path + (key,), f"{where}: {key} is {value}, which is too large")
            return None
        return value

    def boolean(self, table: Mapping[str, Any], path: KeyPath, key: str, where: str) -> bool | None:
        if key not in table:
            return None
        value = table[key]
        if not isinstance(value, bool):
            self.fail(
                path + (key,), f"{where}: {key} is {_describe(value)}, expected true or false"
            )
            return None
        return value

    def choice(
        self, table: Mapping[str, Any], path: KeyPath, key: str, where: str, choices: list[str]
    ) -> str | None:
        if key not in table:
            return None
        value = table[key]
        if not isinstance(value, str) or value not in choices:
            expected = " or ".join(f'"{choice}"' for choice in choices)
            self.fail(path + (key,), f"{where}: {key} is {_describe(value)}, expected {expected}")
            return None
        return value

    def day(self, table: Mapping[str, Any], path: KeyPath, key: str, where: str) -> date | None:
        if key not in table:
            self.fail(path, f'{where}: missing key "{key}", expected a date such as 2026-01-31')
            return None
        value = table[key]
        # TOML local dates parse to date. A datetime is a subclass of date, but it is not a day.
        if type(value) is not date:
            self.fail(
                path + (key,),
                f"{where}: {key} is {_describe(value)}, expected a date such as 2026-01-31 "
                "(no quotes)",
            )
            return None
        return value

    def amount(self, table: Mapping[str, Any], path: KeyPath, where: str) -> Decimal | None:
        if "amount" not in table:
            self.fail(path, f'{where}: missing key "amount", expected a number such as 15000.50')
            return None
        value = table["amount"]
        key_path = path + ("amount",)
        expected = "expected a number of at most 12 digits before the point and 2 after it"
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            self.fail(key_path, f"{where}: amount is {_describe(value)}, {expected}")
            return None
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            self.fail(key_path, f"{where}: amount is {_describe(value)}, {expected}")
            return None
        if not amount.is_finite() or amount < 0 or amount > MAX_AMOUNT or amount != round(amount, 2):
            self.fail(key_path, f"{where}: amount is {_describe(value)}, {expected}, not negative")
            return None
        return amount

    def phone(
        self,
        table: Mapping[str, Any],
        path: KeyPath,
        key: str,
        where: str,
        *,
        claim: bool = True,
    ) -> str | None:
        if key not in table:
            self.fail(path, f'{where}: missing key "{key}", expected a phone number')
            return None
        return self.phone_value(table[key], path + (key,), where, claim=claim)

    def phone_value(
        self, value: Any, path: KeyPath, where: str, *, claim: bool = True
    ) -> str | None:
        """Return `value` in E.164. With `claim`, also report a number already listed elsewhere."""
        if not isinstance(value, str):
            self.fail(
                path,
                f"{where}: {_describe(value)} is not a phone number, expected a string such as "
                '"+7 495 111-00-01"',
            )
            return None
        try:
            number = tracking_number_e164(value, self.region)
        except NumberHasExtension:
            self.fail(
                path,
                f"{where}: {_show(value)} has an extension, but a tracking number cannot have "
                "one because callers dial it directly; expected the number alone, such as "
                '"+7 495 111-00-01"',
            )
            return None
        except InvalidNumber:
            self.fail(
                path,
                f"{where}: {_show(value)} is not a valid phone number (region {self.region}), "
                'expected a form such as "+7 495 111-00-01" or "8 (495) 111-00-01"',
            )
            return None
        if claim:
            if number in self.number_paths:
                self.fail(
                    path,
                    f"{where}: {number} is listed twice in the file",
                    first_path=self.number_paths[number],
                )
                return None
            self.number_paths[number] = path
        return number

    def check_timezone(self, name: str, path: KeyPath, where: str) -> bool:
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            self.fail(
                path,
                f"{where}: timezone {_show(name)} is not a known time zone, expected an IANA name "
                'such as "Europe/Moscow" or "Asia/Yekaterinburg"',
            )
            return False
        return True

    def source_reference(
        self,
        table: Mapping[str, Any],
        path: KeyPath,
        key: str,
        where: str,
        source_names: set[str],
    ) -> str | None:
        name = self.text(table, path, key, where)
        if name is not None and name not in source_names:
            self.fail(
                path + (key,),
                f"{where}: {key} refers to unknown source {_show(name)}, expected one of the "
                f"company's sources: {_names(source_names)}",
            )
            return None
        return name


def _key_path_text(path: KeyPath) -> str:
    """Write a key path as in companies[0].sources[1].name."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif text:
            text += f".{part}"
        else:
            text = part
    return text


def _show(value: str) -> str:
    """Quote a value as a TOML basic string, so control characters show as escapes."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + _CONTROL_CHARACTER.sub(lambda match: f"\\u{ord(match.group()):04x}", escaped) + '"'


def _describe(value: Any) -> str:
    """Name the TOML type of a value and show it, as in: a string "abc", an integer 5."""
    if isinstance(value, bool):
        return f"a boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"an integer {value}"
    if isinstance(value, float):
        return f"a float {value}"
    if isinstance(value, str):
        return f"a string {_show(value)}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime):
        return f"a date-time {value.isoformat()}"
    if isinstance(value, date):
        return f"a date {value.isoformat()}"
    return f"a {type(value).__name__} value"


def _type_name(value: Any) -> str:
    """Name the TOML type of a value without showing it, for values that must stay secret."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (date, time)):
        return "a date or time"
    return f"a {type(value).__name__} value"


def _names(names: set[str]) -> str:
    if not names:
        return "(the company has no sources)"
    return ", ".join(_show(name) for name in sorted(names))
