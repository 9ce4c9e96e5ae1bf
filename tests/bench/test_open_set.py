"""The open-set probe: shares of validation pairs answered unknown, taught and untaught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.open_set import main


@pytest.mark.slow
def test_open_set_probe_reports_unknown_shares_per_path(avmnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "open.json"
    assert main(["--data", str(avmnist), "--preset", "tiny", "--strategy", "ranpac", "--quick",
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert len(report["taught"]) == 4 and len(report["untaught"]) == 2
    assert not set(report["untaught"]) & {c for t in report["taught"] for c in t}
    for group in ("taught", "untaught"):
        assert set(report["unknown_percent"][group]) == {"av", "visual", "audio"}
        assert all(0.0 <= v <= 100.0 for v in report["unknown_percent"][group].values())
    assert report["evaluated_on"].startswith("validation")


def test_open_set_probe_names_a_bad_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(tmp_path), "--preset", "tiny"]) == 2
    assert "--data" in capsys.readouterr().err
