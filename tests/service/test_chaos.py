"""The chaos campaign's short run, as CI makes it: real daemons killed at random moments and at the
failpoints (two in the commit window), fuzzed requests, stalled uploads, 8 clients through a commit
and the largest images. Every correctness target must hold; latencies are reported, not judged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.chaos.__main__ import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_quick_campaign_meets_every_correctness_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "chaos.json"
    status = main(["--quick", "--no-progress", "--work", str(tmp_path / "work"), "--out", str(out)])
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())
    assert status == 0, results["failures"]
    assert results["kills"]["trials"] == 5 and results["kills"]["commit_window"] == 2  # both kills landed there
    assert results["fuzz"]["requests"] == 300
    assert results["stalls"]["held"] == 24 and results["stalls"]["refused"] == 6  # server.max_open_streams
    assert results["swap"]["committed"] and results["swap"]["learning"]["calls"] > 0
    assert "| kill -9 at random and targeted moments" in printed and "correctness targets: all met" in printed
