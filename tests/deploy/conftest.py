"""Fixtures and helpers for the deployment tests: the deploy/ scripts, promtool, PromQL metric names."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def load_script(relative: str) -> ModuleType:
    """A deploy/ script imported by path (deploy/ is not an installed package)."""
    path = DEPLOY / relative
    name = "deploy_" + path.stem
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset",
             "bool", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (functions, keywords, labels and Grafana variables
    are not names). ``sum by (le) (rate(x_bucket{a="b"}[5m]))`` -> ``{"x_bucket"}``."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery brackets
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", " ", text)  # Grafana variables
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == ".":  # 15m, 1e3
            continue
        if text[match.end():].lstrip().startswith("("):  # a function call
            continue
        if match.group(0).lower() in _KEYWORDS:
            continue
        names.add(match.group(0))
    return names


@pytest.fixture(scope="session")
def promtool() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``promtool(*args, cwd=..., input=...)``; skips when Debian's prometheus package is absent."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool not found: install Debian's prometheus package (deploy/ci/install-prometheus.sh)")

    def run(*args: str, cwd: Path | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([binary, *args], cwd=cwd, input=input, capture_output=True, text=True, timeout=60)

    return run


@pytest.fixture(scope="session")
def catalogue() -> ModuleType:
    return load_script("catalogue.py")


@pytest.fixture(scope="session")
def exported(catalogue: ModuleType) -> set[str]:
    """Every series name the daemon can export, plus Prometheus' ``up``."""
    return set(catalogue.exported_series())
