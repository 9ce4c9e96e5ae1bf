"""The per-task-experts probe (option (b)) on the real AV-MNIST folder (skipped when the data is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.ease_probe import main


@pytest.mark.slow
def test_both_heads_get_a_full_accuracy_matrix_per_path(avmnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "ease.json"
    assert main(["--data", str(avmnist), "--preset", "tiny", "--quick", "--threads", "1", "--tasks", "3",
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["tasks"] == 3 and len(report["train_seconds_per_task"]) == 3
    for head in ("a", "b"):
        for path in ("av", "visual", "audio"):
            rows = report["accuracy_matrices"][head][path]
            assert [len(r) for r in rows] == [1, 2, 3]  # a row per task, a column per task so far
            figures = report["figures"][head][path]
            assert 0.0 <= figures["last_accuracy"] <= 100.0 and figures["last_accuracy"] == report["pooled"][head][path][-1]
    # The sound-only path reads the same feature in both heads (audio has no per-task experts).
    assert report["accuracy_matrices"]["a"]["audio"] == report["accuracy_matrices"]["b"]["audio"]


def test_a_single_task_is_refused_naming_the_option(avmnist: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(avmnist), "--tasks", "1"]) == 2
    assert capsys.readouterr().err.startswith("error: --tasks")
