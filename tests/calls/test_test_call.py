"""`pbx-bridge test-call` places a QA call through ARI and prints the row the service journaled."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from tests.calls.conftest import OFFICE, TRACKED, TRACKED_DIALED
from tests.fake_asterisk import Answer


async def run_test_call(config_path, *args):
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pbx_bridge", "--config", str(config_path), "test-call", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, stdout.decode(), stderr.decode()


async def test_test_call_prints_journal_row(serve, fake_asterisk, tmp_path):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=0.2))

    code, out, err = await run_test_call(
        tmp_path / "pbx-bridge.toml", TRACKED_DIALED, "--caller", "+79161234567", "--timeout", "30"
    )

    assert code == 0, err
    row = json.loads(out)
    assert row["channel_id"].startswith("qa-")
    assert row["channel_id"].endswith("-in")
    assert row["dialed_number"] == TRACKED
    assert row["caller_number"] == "+79161234567"
    assert row["outcome"] == "answered"
    assert row["answered_by"] == OFFICE
    assert row["recording"]["state"] == "done"
    originate = next(r for r in fake_asterisk.requests if r.rest == "POST /channels")
    assert originate.params["endpoint"] == f"Local/{TRACKED_DIALED}@calltracking-inbound"
    assert originate.params["context"] == "calltracking-qa"
    assert originate.params["extension"] == "caller"
    # Asterisk's default originate timeout of 30 s would hang up the QA caller while a hunt list
    # still rings, so the QA call waits as long as the command does.
    assert originate.params["timeout"] == "30"


async def test_test_call_reports_unreachable_asterisk(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(
        f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "x.db"}"\n'
        '[ari]\nurl = "http://127.0.0.1:9"\npassword = "qa-secret-value"\nrequest_timeout = 2.0\n',
        encoding="utf-8",
    )

    code, out, err = await run_test_call(config, TRACKED_DIALED)

    assert code == 1
    assert out == ""
    assert err.startswith("pbx-bridge: test call failed:")
    assert "qa-secret-value" not in err
    assert "Traceback" not in err


async def test_test_call_rejected_password_hint(fake_asterisk, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(
        f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "x.db"}"\n'
        f'[ari]\nurl = "{fake_asterisk.url}"\npassword = "wrong-ari-password"\n',
        encoding="utf-8",
    )

    code, out, err = await run_test_call(config, TRACKED_DIALED)

    assert code == 1
    assert out == ""
    assert err.startswith("pbx-bridge: test call failed:")
    assert "401" in err
    assert "Check ari.username and ari.password" in err
    assert "wrong-ari-password" not in err
    assert "Traceback" not in err


@pytest.mark.parametrize("timeout", ["nan", "inf", "0", "-5", "1e300"])
async def test_test_call_rejects_invalid_timeout(tmp_path, timeout):
    config = tmp_path / "c.toml"
    config.write_text(
        f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "x.db"}"\n[ari]\nurl = "http://127.0.0.1:9"\n',
        encoding="utf-8",
    )

    code, out, err = await run_test_call(config, TRACKED_DIALED, f"--timeout={timeout}")

    assert code == 2
    assert out == ""
    assert "argument --timeout" in err
    assert timeout in err
    assert "Traceback" not in err
