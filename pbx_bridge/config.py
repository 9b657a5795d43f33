"""Configuration: a TOML file, then PBX_BRIDGE_<SECTION>_<KEY> environment variables, over defaults.

Every section is a frozen dataclass; the field types are the schema. Errors raise ConfigError with
one line naming the file (or variable), the key and what was expected.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

ENV_PREFIX = "PBX_BRIDGE_"
CONFIG_ENV = "PBX_BRIDGE_CONFIG"
SECRET_KEYS = frozenset({"password", "token", "secret", "api_secret"})
MASK = "********"


class ConfigError(Exception):
    """Invalid configuration; the message is one line fit to show the operator."""


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite+aiosqlite:///pbx-bridge.db"
    # Apply pending Alembic revisions when `serve` starts.
    auto_upgrade: bool = True
    echo: bool = False


@dataclass(frozen=True)
class AriConfig:
    url: str = "http://127.0.0.1:8088"
    username: str = "pbx-bridge"
    password: str = ""
    app: str = "calltracking"
    # Seconds between websocket reconnect attempts: doubles from min to max.
    reconnect_min_delay: float = 0.5
    reconnect_max_delay: float = 30.0
    # Seconds to wait for one REST answer from Asterisk.
    request_timeout: float = 10.0


@dataclass(frozen=True)
class HttpConfig:
    listen: str = "127.0.0.1:8080"
    # Let several processes listen on one port (SO_REUSEPORT); the kernel spreads connections
    # among them. Extra processes run `serve --no-ari --no-delivery`.
    reuse_port: bool = False


@dataclass(frozen=True)
class RecordingConfig:
    enabled: bool = True
    format: str = "wav"
    # Recording name relative to Asterisk's recording folder, without extension. Placeholders:
    # {date} (YYYY/MM/DD of the call's start, UTC), {call_id} (the caller's channel id).
    name_template: str = "calltracking/{date}/{call_id}"
    # Asterisk's recording folder as this host sees it (astspooldir/recording).
    folder: str = "/var/spool/asterisk/recording"


@dataclass(frozen=True)
class CallsConfig:
    # Where calls on numbers that are not tracked go; empty means the fallback context.
    default_destination: str = ""
    ring_timeout: int = 20
    # Dialplan context that `continue` sends a caller to when pbx-bridge cannot handle the call.
    fallback_context: str = "calltracking-fallback"
    # Seconds during which that `continue` is retried while Asterisk's REST interface fails.
    fallback_retry_seconds: float = 15.0
    # Region for numbers written in national form, such as "8 (495) 111-00-01" in RU.
    default_region: str = "RU"
    # Seconds the call flow keeps a tracking number's settings and its company's webhooks
    # before reading them again.
    route_cache_seconds: float = 10.0


@dataclass(frozen=True)
class LogConfig:
    level: str = "INFO"
    format: str = "human"


@dataclass(frozen=True)
class DeliveryConfig:
    """The outbox worker that sends call data to webhooks, GA4 and Yandex Metrica."""

    enabled: bool = True
    # Seconds between outbox polls when nothing was due. Rows written by this process's call
    # flow wake the worker at once, so the poll finds the rows of other processes.
    poll_interval: float = 10.0
    # Rows one worker claims and sends at once.
    batch_size: int = 50
    # Seconds before a retry: doubles after each failed attempt, from min up to max.
    retry_min_delay: float = 5.0
    retry_max_delay: float = 600.0
    # Seconds after which a row that still fails is marked dead (default one day).
    give_up_after: float = 86400.0
    # Seconds to wait for one receiver's response.
    request_timeout: float = 10.0


@dataclass(frozen=True)
class Ga4Config:
    """Google Analytics 4 Measurement Protocol; off while measurement_id is empty."""

    measurement_id: str = ""
    api_secret: str = ""
    event_name: str = "phone_call"
    base_url: str = "https://www.google-analytics.com"


@dataclass(frozen=True)
class MetricaConfig:
    """Yandex Metrica offline call uploads; off while counter_id is empty."""

    counter_id: str = ""
    # OAuth token with the metrika:write scope.
    token: str = ""
    base_url: str = "https://api-metrika.yandex.net"
    # Calls per uploaded CSV file.
    batch_size: int = 500
    # Link to a call in pbx-bridge for Metrica's CallTrackerURL column; {call_id} is replaced.
    call_url_template: str = ""


@dataclass(frozen=True)
class TrackingConfig:
    """The public tracking API that website pages call through the ct.js snippet."""

    # Requests a minute that one client IP may make to the tracking API; 0 turns the limit off.
    rate_limit_per_minute: int = 300
    # Requests one client IP may make at once above that rate.
    rate_limit_burst: int = 60
    # Header that carries the client address when pbx-bridge runs behind a reverse proxy, such
    # as X-Forwarded-For (its last entry is used). Empty: the peer address of the connection.
    # Set it only behind a proxy that sets this header, because clients can forge it.
    client_ip_header: str = ""
    # Seconds a site's settings are cached by the tracking API before they are read again.
    site_cache_seconds: float = 5.0


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    ari: AriConfig = field(default_factory=AriConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    calls: CallsConfig = field(default_factory=CallsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    ga4: Ga4Config = field(default_factory=Ga4Config)
    metrica: MetricaConfig = field(default_factory=MetricaConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    @property
    def http_host(self) -> str:
        return self.http.listen.rpartition(":")[0].strip("[]") or "127.0.0.1"

    @property
    def http_port(self) -> int:
        return int(self.http.listen.rpartition(":")[2])


_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("log", "format"): ("human", "json"),
    ("log", "level"): ("DEBUG", "INFO", "WARNING", "ERROR"),
    ("recording", "format"): ("wav", "gsm", "ulaw", "alaw", "sln", "g722", "wav16"),
}


def load_config(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Build the effective configuration: defaults, then the file, then the environment."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(CONFIG_ENV) or None
    raw: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        origin = str(path)
        raw = _read_toml(Path(path))

    sections: dict[str, Any] = {}
    for section_field in dataclasses.fields(Config):
        name = section_field.name
        sections[name] = _build_section(
            name, _SECTION_TYPES[name], raw.pop(name, {}), origin, environ
        )
    if raw:
        unknown = sorted(raw)[0]
        if not isinstance(raw[unknown], dict):
            # A key above the first section header, as when the header line was left out.
            raise ConfigError(f"{origin}: key {unknown} is outside any section; {_section_hint(unknown)}")
        raise ConfigError(
            f"{origin}: unknown section [{unknown}]; expected one of {', '.join(_SECTION_TYPES)}"
        )
    config = Config(**sections)
    _check_listen(config, origin)
    _check_database_url(config, origin)
    _check_ari_url(config, origin)
    _check_recording_name(config, origin)
    _check_numbers(config, origin, environ)
    _check_delivery(config, origin)
    return config


def _section_hint(key: str) -> str:
    """Name the sections that have `key`, for a key written above every section header."""
    owners = [
        f"[{name}]"
        for name, section_type in _SECTION_TYPES.items()
        if key in {section_field.name for section_field in dataclasses.fields(section_type)}
    ]
    if not owners:
        return f"no section has a key {key}, so check its spelling and write it under its section header"
    return f"write it under {' or '.join(owners)}"


def masked(config: Config) -> dict[str, dict[str, Any]]:
    """Return the configuration as plain data with every secret replaced by a mask."""
    result: dict[str, dict[str, Any]] = {}
    for name, section in dataclasses.asdict(config).items():
        result[name] = {
            key: (MASK if key in SECRET_KEYS and value else value) for key, value in section.items()
        }
    result["database"]["url"] = mask_url(config.database.url)
    return result


def mask_url(url: str) -> str:
    """Hide the password of a URL such as postgresql+asyncpg://user:secret@host/db."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    if ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:{MASK}@{host}"


_SECTION_TYPES: dict[str, type] = {
    "database": DatabaseConfig,
    "ari": AriConfig,
    "http": HttpConfig,
    "recording": RecordingConfig,
    "calls": CallsConfig,
    "log": LogConfig,
    "delivery": DeliveryConfig,
    "ga4": Ga4Config,
    "metrica": MetricaConfig,
    "tracking": TrackingConfig,
}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: malformed TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: malformed TOML: byte {error.start} is not valid UTF-8, save the file as UTF-8"
        ) from None
    except RecursionError:
        raise ConfigError(f"{path}: malformed TOML: arrays or tables nested too deeply") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read configuration file: {error.strerror}") from None


def _build_section(
    name: str, section_type: type, raw: Any, origin: str, environ: Mapping[str, str]
) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: [{name}] must be a table, got {_type_name(raw)}")
    hints = typing.get_type_hints(section_type)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in hints:
            raise ConfigError(
                f"{origin}: unknown key {name}.{key}; expected one of {', '.join(hints)}"
            )
        values[key] = _coerce(value, hints[key], f"{origin}: {name}.{key}", secret=key in SECRET_KEYS)

    for key, hint in hints.items():
        variable = f"{ENV_PREFIX}{name.upper()}_{key.upper()}"
        if variable in environ:
            values[key] = _coerce_env(environ[variable], hint, f"environment {variable}")

    for (section, key), choices in _CHOICES.items():
        if section == name and key in values:
            value = values[key].upper() if key == "level" else values[key]
            if value not in choices:
                raise ConfigError(
                    f"{origin}: {name}.{key} is {values[key]!r}; expected one of {', '.join(choices)}"
                )
            values[key] = value
    return section_type(**values)


def _coerce(value: Any, hint: Any, where: str, *, secret: bool = False) -> Any:
    expected = _base_type(hint)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, bool):
        raise ConfigError(f"{where} must be an integer, got a boolean")
    if not isinstance(value, expected):
        # A secret of the wrong type is still a secret, so only its type is shown.
        shown = "" if secret else f" {value!r}"
        raise ConfigError(f"{where} must be {_expected_name(expected)}, got {_type_name(value)}{shown}")
    return value


def _coerce_env(text: str, hint: Any, where: str) -> Any:
    expected = _base_type(hint)
    if expected is str:
        return text
    if expected is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where} must be a boolean (true or false), got {text!r}")
    try:
        return expected(text)
    except ValueError:
        raise ConfigError(f"{where} must be {_expected_name(expected)}, got {text!r}") from None


def _base_type(hint: Any) -> type:
    if isinstance(hint, types.UnionType):
        return next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def _expected_name(expected: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean (true or false)"}[
        expected
    ]


def _type_name(value: Any) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _check_listen(config: Config, origin: str) -> None:
    host, sep, port = config.http.listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(
            f"{origin}: http.listen is {config.http.listen!r}; expected HOST:PORT such as 127.0.0.1:8080"
        )


# The service runs on SQLAlchemy's asyncio engine, so only these async drivers can work.
SUPPORTED_DATABASE_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")


def _check_database_url(config: Config, origin: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        driver = make_url(config.database.url).drivername
    except ArgumentError:
        # The value is not shown: mask_url cannot find a password in a value it cannot parse.
        raise ConfigError(
            f"{origin}: database.url is not a valid URL; expected a URL such as "
            "sqlite+aiosqlite:///pbx-bridge.db or postgresql+asyncpg://user:password@host/db"
        ) from None
    if driver not in SUPPORTED_DATABASE_DRIVERS:
        raise ConfigError(
            f"{origin}: database.url uses {driver!r}; expected one of "
            f"{', '.join(SUPPORTED_DATABASE_DRIVERS)}, such as postgresql+asyncpg://user:password@host/db"
        )


def _check_ari_url(config: Config, origin: str) -> None:
    try:
        parts = urlsplit(config.ari.url)
        parts.port  # raises ValueError on a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        # A value with "@" may carry a password that urlsplit could not separate, so it is hidden.
        shown = "" if "@" in config.ari.url else f" {config.ari.url!r}"
        raise ConfigError(
            f"{origin}: ari.url{shown} is invalid; expected http://HOST:PORT such as http://127.0.0.1:8088"
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"{origin}: ari.url contains credentials; set ari.username and ari.password instead"
        )


def _check_recording_name(config: Config, origin: str) -> None:
    # The call flow fills the template when a call is answered, so a mistake here would surface
    # only then, once per answered call.
    template = config.recording.name_template
    expected = "placeholders {date} and {call_id} in a relative path such as calltracking/{date}/{call_id}"
    try:
        name = template.format(date="2026/01/31", call_id="1700000000.1")
    except (KeyError, IndexError, ValueError):
        raise ConfigError(f"{origin}: recording.name_template is {template!r}; expected {expected}") from None
    if "{call_id}" not in template:
        raise ConfigError(
            f"{origin}: recording.name_template is {template!r}: without {{call_id}} every call's "
            f"recording gets the same name; expected {expected}"
        )
    if name.startswith("/") or ".." in name.split("/"):
        raise ConfigError(
            f"{origin}: recording.name_template is {template!r}: it leaves the recording folder; "
            f"expected {expected}"
        )


# The lowest value of numeric settings outside [delivery], and whether that value itself is valid.
# Delivery settings are checked in delivery/checks.py.
_MINIMUMS: dict[tuple[str, str], tuple[float, bool]] = {
    ("ari", "reconnect_min_delay"): (0, False),
    ("ari", "reconnect_max_delay"): (0, False),
    ("ari", "request_timeout"): (0, False),
    ("calls", "ring_timeout"): (1, True),
    ("calls", "fallback_retry_seconds"): (0, True),
    ("calls", "route_cache_seconds"): (0, True),
    ("tracking", "rate_limit_per_minute"): (0, True),
    ("tracking", "rate_limit_burst"): (0, True),
    ("tracking", "site_cache_seconds"): (0, True),
}


def _check_numbers(config: Config, origin: str, environ: Mapping[str, str]) -> None:
    """Raise ConfigError for a number that is not finite or is below its setting's minimum.

    TOML and the environment accept nan and inf. Without this check such a value would reach
    the timers of the first call that uses it, instead of stopping the program at start.
    """
    for section_field in dataclasses.fields(Config):
        section = getattr(config, section_field.name)
        for setting in dataclasses.fields(section):
            value = getattr(section, setting.name)
            if isinstance(value, float) and not math.isfinite(value):
                where = _setting_origin(origin, environ, section_field.name, setting.name)
                raise ConfigError(
                    f"{where}: {section_field.name}.{setting.name} is {value}; expected a finite number"
                )
    for (name, key), (minimum, minimum_valid) in _MINIMUMS.items():
        value = getattr(getattr(config, name), key)
        if value < minimum or (value == minimum and not minimum_valid):
            expected = f"at least {minimum}" if minimum_valid else f"greater than {minimum}"
            where = _setting_origin(origin, environ, name, key)
            raise ConfigError(f"{where}: {name}.{key} is {value}; expected a number {expected}")
    if config.ari.reconnect_min_delay > config.ari.reconnect_max_delay:
        where = _setting_origin(origin, environ, "ari", "reconnect_min_delay")
        if where == origin:
            where = _setting_origin(origin, environ, "ari", "reconnect_max_delay")
        raise ConfigError(
            f"{where}: ari.reconnect_min_delay ({config.ari.reconnect_min_delay}) is greater than "
            f"ari.reconnect_max_delay ({config.ari.reconnect_max_delay})"
        )


def _setting_origin(origin: str, environ: Mapping[str, str], section: str, key: str) -> str:
    """Return where a setting's value came from: its environment variable if set, else `origin`."""
    variable = f"{ENV_PREFIX}{section.upper()}_{key.upper()}"
    return f"environment {variable}" if variable in environ else origin


def _check_delivery(config: Config, origin: str) -> None:
    # Imported here because the delivery package imports this module.
    from pbx_bridge.delivery.checks import check_delivery_config

    check_delivery_config(config, origin)
