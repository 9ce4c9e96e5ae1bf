"""The forgetting probe on the real AV-MNIST folder (skipped when the data is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.probe import main


@pytest.mark.slow
@pytest.mark.parametrize("tasks, classes_per_task", [(None, 2), ("10", 1)])
def test_probe_reports_every_path(avmnist: Path, tmp_path: Path, tasks: str | None, classes_per_task: int) -> None:
    out = tmp_path / "probe.json"
    options = [] if tasks is None else ["--tasks", tasks]
    assert main(["--data", str(avmnist), "--preset", "tiny", "--quick", "--threads", "1", "--out", str(out),
                 *options]) == 0
    report = json.loads(out.read_text())
    assert report["tasks"] == int(tasks or 5)  # the benchmark's T = 5 order unless told otherwise
    assert [len(c) for c in report["classes"]] == [classes_per_task] * 2
    assert all(n > 0 for n in report["held_out"])
    for path in ("av", "visual", "audio"):
        figures = report["paths"][path]
        assert set(figures) == {"old_after_t1", "old_after_t2", "old_within_old", "new_after_t2",
                                "old_feature_cosine"}
        assert all(0.0 <= figures[k] <= 1.0 for k in figures if k != "old_feature_cosine")
    # Audio features pass only frozen parts after task 1 (the projection freezes with it).
    assert report["paths"]["audio"]["old_feature_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= report["old_visual_new_experts_off"] <= 1.0


@pytest.mark.parametrize("tasks", ["1", "11"])
def test_probe_refuses_a_number_of_tasks_it_cannot_split_naming_it(avmnist: Path, tasks: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(avmnist), "--tasks", tasks]) == 2
    assert capsys.readouterr().err.startswith("error: --tasks")


def test_probe_rejects_a_negative_replay_count(avmnist: Path) -> None:
    assert main(["--data", str(avmnist), "--replayed-features", "-1"]) == 2


def test_probe_refuses_a_device_this_machine_does_not_have(avmnist: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(avmnist), "--device", "gpu"]) == 2
    assert "--device" in capsys.readouterr().err
