"""CI runs the README's test command, and a suite that collects no tests fails it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    ci_script = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()

    assert any(line.split("#")[0].strip() == "make test" for line in readme)
    assert "make test" in [line.strip() for line in ci_script]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("pytest_status", [1, 5])
def test_make_test_fails_when_pytest_fails(tmp_path: Path, pytest_status: int) -> None:
    # A stand-in virtual environment whose pytest exits with the given status: 5 is pytest's
    # status for "no tests collected".
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake_pytest = venv / "bin" / "pytest"
    fake_pytest.write_text(f"#!/bin/sh\nexit {pytest_status}\n", encoding="utf-8")
    fake_pytest.chmod(0o755)
    (venv / "bin" / "python").touch()
    (venv / ".installed").touch()
    (venv / ".installed-test").touch()

    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "test", f"VENV={venv}"],
        capture_output=True, text=True, timeout=60,
    )

    assert result.returncode != 0, result.stdout + result.stderr
    assert "pip install" not in result.stdout
    assert f"{venv}/bin/pytest" in result.stdout
