"""The routing probe: its oracle router on synthetic tasks, and the command on AV-MNIST (skipped
when the data is absent)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import torch

from bench.routing_probe import main, only_task_experts, routed_tasks
from model.learner import Learner
from model.samples import LabeledSample


def test_own_experts_only_routes_every_image_to_its_task(
    make_learner: Callable[..., Learner], two_tasks: dict[str, list[LabeledSample]]
) -> None:
    learner = make_learner("mcil-paper")
    learner.learn_task(two_tasks["train1"], ["red", "green"])
    learner.learn_task(two_tasks["train2"], ["blue", "yellow"])
    classes = learner.classes
    batch = learner.encode_inputs(two_tasks["test1"], labels=[classes.index(s.label) for s in two_tasks["test1"]])
    heads = learner.backbone.image.mixtures[0].router.heads
    before = {key: head.bias.detach().clone() for key, head in heads.items()}
    for index, key in enumerate(learner.task_keys):
        routed = routed_tasks(only_task_experts(learner, key), batch)
        assert (routed == index).all(), f"task {key}: images routed to {routed.tolist()}"
    # The copies leave the learner itself as it was.
    assert all(torch.equal(heads[key].bias, bias) for key, bias in before.items())


def test_a_strategy_without_task_experts_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--strategy", "icarl"]) == 2
    assert "--strategy icarl" in capsys.readouterr().err


@pytest.mark.slow
def test_probe_reports_every_task(avmnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "routing.json"
    args = ["--data", str(avmnist), "--preset", "tiny", "--quick", "--tasks", "3", "--threads", "1", "--out", str(out)]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert [t["task"] for t in report["per_task"]] == [1, 2, 3]
    assert sum(len(t["classes"]) for t in report["per_task"]) == 10
    for t in report["per_task"]:
        assert t["held_out"] > 0
        assert 0.0 <= t["routed_to_own_task"] <= 1.0
        for figures in (t["accuracy"], t["accuracy_own_experts_only"]):
            assert set(figures) == {"av", "visual"} and all(0.0 <= v <= 1.0 for v in figures.values())


def test_probe_rejects_a_task_count_out_of_range(avmnist: Path) -> None:
    assert main(["--data", str(avmnist), "--tasks", "11"]) == 2
