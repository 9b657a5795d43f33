from pathlib import Path

import pytest

from pbx_bridge.cli import main
from pbx_bridge.config import ConfigError, load_config, masked


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pbx-bridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file():
    config = load_config(environ={})

    assert config.database.url == "sqlite+aiosqlite:///pbx-bridge.db"
    assert config.ari.url == "http://127.0.0.1:8088"
    assert config.http.listen == "127.0.0.1:8080"
    assert config.http_port == 8080


def test_file_values_override_defaults(tmp_path):
    path = write(tmp_path, '[ari]\nurl = "http://10.0.0.5:8088"\napp = "ct"\n[calls]\nring_timeout = 30\n')

    config = load_config(path, environ={})

    assert config.ari.url == "http://10.0.0.5:8088"
    assert config.ari.app == "ct"
    assert config.calls.ring_timeout == 30


def test_environment_overrides_file(tmp_path):
    path = write(tmp_path, '[ari]\npassword = "from-file"\n')

    config = load_config(path, environ={"PBX_BRIDGE_ARI_PASSWORD": "from-env", "PBX_BRIDGE_CALLS_RING_TIMEOUT": "25"})

    assert config.ari.password == "from-env"
    assert config.calls.ring_timeout == 25


def test_config_path_from_environment(tmp_path):
    path = write(tmp_path, '[http]\nlisten = "127.0.0.1:9090"\n')

    config = load_config(environ={"PBX_BRIDGE_CONFIG": str(path)})

    assert config.http_port == 9090


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[ari]\nurl = 5\n', "ari.url must be a string, got an integer 5"),
        ('[ari]\nuser = "x"\n', "unknown key ari.user"),
        ('[telephony]\nx = 1\n', "unknown section [telephony]"),
        ('password = "x"\n', "key password is outside any section; write it under [ari]"),
        ('url = "x"\n', "key url is outside any section; write it under [database] or [ari]"),
        ('pasword = "x"\n', "key pasword is outside any section; no section has a key pasword"),
        ('[ari\nurl = "x"\n', "malformed TOML"),
        ('[calls]\nring_timeout = true\n', "calls.ring_timeout must be an integer, got a boolean"),
        ('[log]\nformat = "xml"\n', "log.format is 'xml'; expected one of human, json"),
        ('[http]\nlisten = "localhost"\n', "http.listen is 'localhost'; expected HOST:PORT"),
        ('[database]\nurl = "garbage"\n', "database.url is not a valid URL; expected a URL such as"),
        ('[database]\nurl = "postgresql://ct@db/ct"\n', "database.url uses 'postgresql'; expected one of"),
        ('[ari]\nurl = "not a url"\n', "ari.url 'not a url' is invalid; expected http://HOST:PORT"),
        ('[ari]\nurl = "http://127.0.0.1:99999"\n', "ari.url 'http://127.0.0.1:99999' is invalid"),
        (
            '[recording]\nname_template = "{calldate}/{call_id}"\n',
            "recording.name_template is '{calldate}/{call_id}'; expected placeholders",
        ),
        ('[recording]\nname_template = "calls/{date}"\n', "without {call_id} every call's recording"),
        ('[recording]\nname_template = "../{call_id}"\n', "it leaves the recording folder"),
        ('[recording]\nname_template = "/tmp/{call_id}"\n', "it leaves the recording folder"),
        ('[ari]\nrequest_timeout = nan\n', "ari.request_timeout is nan; expected a finite number"),
        ('[calls]\nfallback_retry_seconds = inf\n', "calls.fallback_retry_seconds is inf; expected a finite number"),
        ('[delivery]\npoll_interval = -inf\n', "delivery.poll_interval is -inf; expected a finite number"),
        ('[ari]\nrequest_timeout = 0\n', "ari.request_timeout is 0.0; expected a number greater than 0"),
        ('[calls]\nring_timeout = 0\n', "calls.ring_timeout is 0; expected a number at least 1"),
        ('[calls]\nroute_cache_seconds = -1\n', "calls.route_cache_seconds is -1.0; expected a number at least 0"),
        ('[tracking]\nrate_limit_per_minute = -5\n', "tracking.rate_limit_per_minute is -5; expected a number at least 0"),
        (
            '[ari]\nreconnect_min_delay = 60\n',
            "ari.reconnect_min_delay (60.0) is greater than ari.reconnect_max_delay (30.0)",
        ),
        pytest.param(
            "x = " + "[" * 3000 + "]" * 3000 + "\n", "malformed TOML: arrays or tables nested too deeply",
            id="nested-3000-deep",
        ),
    ],
)
def test_invalid_file_names_key_and_expectation(tmp_path, text, message):
    path = write(tmp_path, text)

    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})

    assert str(raised.value).startswith(str(path))
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ('[ari]\npassword = 7351902\n', "7351902"),
        ('[ga4]\napi_secret = 7351902\n', "7351902"),
        ('[database]\nurl = "postgresql://ct:db-secret@db/ct"\n', "db-secret"),
        ('[database]\nurl = "ct:db-secret@db"\n', "db-secret"),
        ('[ari]\nurl = "http://ct:ari-secret@127.0.0.1:8088"\n', "ari-secret"),
        ('[ari]\nurl = "ct:ari-secret@127.0.0.1:8088"\n', "ari-secret"),
    ],
)
def test_invalid_secret_is_not_shown(tmp_path, text, secret):
    path = write(tmp_path, text)

    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})

    assert str(raised.value).startswith(str(path))
    assert secret not in str(raised.value)


def test_environment_nan_rejected():
    with pytest.raises(ConfigError) as raised:
        load_config(None, environ={"PBX_BRIDGE_ARI_REQUEST_TIMEOUT": "nan"})

    assert "ari.request_timeout is nan; expected a finite number" in str(raised.value)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"PBX_BRIDGE_ARI_REQUEST_TIMEOUT": "nan"},
            "environment PBX_BRIDGE_ARI_REQUEST_TIMEOUT: ari.request_timeout is nan; expected a finite number",
        ),
        (
            {"PBX_BRIDGE_CALLS_ROUTE_CACHE_SECONDS": "-1"},
            "environment PBX_BRIDGE_CALLS_ROUTE_CACHE_SECONDS: calls.route_cache_seconds is -1.0; "
            "expected a number at least 0",
        ),
        (
            {"PBX_BRIDGE_ARI_RECONNECT_MIN_DELAY": "100"},
            "environment PBX_BRIDGE_ARI_RECONNECT_MIN_DELAY: ari.reconnect_min_delay (100.0) is greater "
            "than ari.reconnect_max_delay (30.0)",
        ),
    ],
)
def test_range_error_names_variable(tmp_path, environ, message):
    # The file sets other keys only, so naming it would send the operator to the wrong place.
    path = write(tmp_path, '[ari]\nurl = "http://127.0.0.1:8088"\n')

    with pytest.raises(ConfigError) as raised:
        load_config(path, environ=environ)

    assert str(raised.value) == message


def test_zero_fallback_retry_accepted(tmp_path):
    config = load_config(write(tmp_path, "[calls]\nfallback_retry_seconds = 0\n"), environ={})

    assert config.calls.fallback_retry_seconds == 0.0


def test_invalid_environment_value_names_variable():
    with pytest.raises(ConfigError) as raised:
        load_config(environ={"PBX_BRIDGE_ARI_REQUEST_TIMEOUT": "soon"})

    assert str(raised.value) == "environment PBX_BRIDGE_ARI_REQUEST_TIMEOUT must be a number, got 'soon'"


def test_non_utf8_file_is_malformed(tmp_path, capsys):
    path = tmp_path / "pbx-bridge.toml"
    path.write_bytes(b'[ari]\nurl = "\xff\xfe"\n')

    status = main(["--config", str(path), "config", "show"])

    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1
    assert err.startswith(f"pbx-bridge: {path}: malformed TOML")
    assert "UTF-8" in err


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ConfigError) as raised:
        load_config(tmp_path / "absent.toml", environ={})

    assert "configuration file not found" in str(raised.value)


def test_masked_hides_secrets():
    config = load_config(
        environ={
            "PBX_BRIDGE_ARI_PASSWORD": "ari-secret",
            "PBX_BRIDGE_DATABASE_URL": "postgresql+asyncpg://ct:db-secret@db/ct",
        }
    )

    shown = masked(config)

    assert shown["ari"]["password"] == "********"
    assert shown["database"]["url"] == "postgresql+asyncpg://ct:********@db/ct"
    assert "ari-secret" not in repr(shown)
    assert "db-secret" not in repr(shown)


@pytest.mark.parametrize(
    "text",
    ['[ari]\nurl = 5\n', '[ari]\nuser = "x"\n', '[ari\nurl = "x"\n'],
)
def test_cli_exits_2_with_one_line(tmp_path, capsys, text):
    path = write(tmp_path, text)

    status = main(["--config", str(path), "config", "show"])

    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1
    assert err.startswith(f"pbx-bridge: {path}")
    assert "Traceback" not in err


def test_config_show_prints_masked_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PBX_BRIDGE_ARI_PASSWORD", "ari-secret")
    path = write(tmp_path, '[ari]\nusername = "ct"\n')

    status = main(["--config", str(path), "config", "show"])

    out = capsys.readouterr().out
    assert status == 0
    assert '"username": "ct"' in out
    assert "ari-secret" not in out
    assert '"password": "********"' in out


@pytest.mark.parametrize("command", [["db", "current"], ["db", "upgrade"]])
def test_cli_database_down_one_line(tmp_path, capsys, command):
    path = write(tmp_path, '[database]\nurl = "postgresql+asyncpg://nobody:db-secret@127.0.0.1:1/none"\n')

    status = main(["--config", str(path), *command])

    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("pbx-bridge: database postgresql+asyncpg://nobody:********@127.0.0.1:1/none failed:")
    assert err.count("\n") == 1
    assert "db-secret" not in err


def test_config_show_into_closed_pipe_is_quiet(tmp_path):
    import os
    import subprocess
    import sys

    path = write(tmp_path, '[ari]\nusername = "ct"\n')
    read_end, write_end = os.pipe()
    # The reader is gone before the command writes, as with `config show | head -0`.
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pbx_bridge", "--config", str(path), "config", "show"],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
        )
    finally:
        os.close(write_end)

    assert result.returncode == 1
    assert "database" not in result.stderr
    assert "Traceback" not in result.stderr
