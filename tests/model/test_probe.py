"""The forgetting probe on the real AV-MNIST folder (skipped when the data is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.probe import main


@pytest.mark.slow
def test_probe_reports_every_path(avmnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "probe.json"
    assert main(["--data", str(avmnist), "--preset", "tiny", "--quick", "--threads", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert len(report["classes"]) == 2 and all(n > 0 for n in report["held_out"])
    for path in ("av", "visual", "audio"):
        figures = report["paths"][path]
        assert set(figures) == {"old_after_t1", "old_after_t2", "old_within_old", "new_after_t2",
                                "old_feature_cosine"}
        assert all(0.0 <= figures[k] <= 1.0 for k in figures if k != "old_feature_cosine")
    # Audio features pass only frozen parts after task 1 (the projection freezes with it).
    assert report["paths"]["audio"]["old_feature_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= report["old_visual_new_experts_off"] <= 1.0


def test_probe_rejects_a_negative_replay_count(avmnist: Path) -> None:
    assert main(["--data", str(avmnist), "--replayed-features", "-1"]) == 2


def test_probe_refuses_a_device_this_machine_does_not_have(avmnist: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(avmnist), "--device", "gpu"]) == 2
    assert "--device" in capsys.readouterr().err
