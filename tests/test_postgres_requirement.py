"""Without a PostgreSQL server the PostgreSQL half of storage tests is skipped with its reason,
and PBX_BRIDGE_REQUIRE_POSTGRES=1 turns that skip into a failure, as CI needs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STORAGE_TEST = "tests/test_storage.py::test_tracking_number_is_unique"


def run_storage_test(require: bool) -> subprocess.CompletedProcess[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    env = {
        **os.environ,
        "PBX_BRIDGE_TEST_POSTGRES_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port}/test",
        "PBX_BRIDGE_REQUIRE_POSTGRES": "1" if require else "0",
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-q", STORAGE_TEST],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize("require", [False, True])
def test_missing_postgres_skipped_unless_required(require: bool) -> None:
    result = run_storage_test(require)
    output = result.stdout + result.stderr

    assert "127.0.0.1:" in output
    assert "is not reachable" in output
    if require:
        assert result.returncode == 1, output
        assert "1 passed" in output
        assert "PBX_BRIDGE_REQUIRE_POSTGRES=1" in output
    else:
        assert result.returncode == 0, output
        assert "1 passed, 1 skipped" in output
