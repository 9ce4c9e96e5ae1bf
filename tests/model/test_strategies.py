"""Every strategy behind the one learner interface: two tasks, predictions, a save/load round trip."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from model.backbone import build_backbone
from model.learner import Learner
from model.strategies import STRATEGIES
from tests.conftest import FAST

QUICK = replace(FAST, training=replace(FAST.training, epochs=2), exemplars_per_class=5)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategy_learns_two_tasks_and_round_trips(name: str, make_learner, two_tasks, tmp_path: Path) -> None:
    learner = make_learner(name, config=QUICK)
    learner.learn_task(two_tasks["train1"], ["red", "green"])
    learner.learn_task(two_tasks["train2"], ["blue", "yellow"])
    samples = [s.only("av") for s in two_tasks["test1"][:6] + two_tasks["test2"][:6]]
    preds = learner.predict(samples, top_k=4)
    assert all(sorted(p.classes) == ["blue", "green", "red", "yellow"] for p in preds)
    if learner.head is None:  # text prototypes: a softmax over every class
        assert all(abs(sum(p.scores) - 1) < 1e-4 for p in preds)
    else:  # a statistics head: its own scores, each in [0, 1]
        assert all(0.0 <= x <= 1.0 for p in preds for x in p.scores)

    learner.save(tmp_path)
    assert (tmp_path / "strategy.safetensors").exists() == (learner.keeps_exemplars or learner.strategy.network is not None)
    assert (tmp_path / "head.safetensors").exists() == (learner.head is not None)
    loaded = Learner.load(tmp_path, backbone=build_backbone("tiny"))
    again = loaded.predict(samples, top_k=4)
    assert [p.classes for p in again] == [p.classes for p in preds]
    assert np.allclose([p.scores for p in again], [p.scores for p in preds], atol=1e-6)


def test_zero_shot_trains_nothing(make_learner, two_tasks) -> None:
    learner = make_learner("zero-shot", config=QUICK)
    report = learner.learn_task(two_tasks["train1"], ["red", "green"])
    assert report.steps == 0 and learner.backbone.image.expert_tasks == []


def test_icarl_keeps_exemplars_per_class(make_learner, two_tasks) -> None:
    learner = make_learner("icarl", config=QUICK)
    learner.learn_task(two_tasks["train1"], ["red", "green"])
    memory = learner.strategy.memory
    assert memory is not None and memory.labels.bincount().tolist() == [5, 5]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_task_of_known_classes_adds_to_them(name: str, make_learner, two_tasks, tmp_path: Path) -> None:
    """Domain-incremental learning: a later task brings more examples of classes already learned."""
    narrow = replace(QUICK, head=replace(QUICK.head, expansion=64))  # ranpac's 2000-wide solve costs seconds
    learner = make_learner(name, config=narrow if name == "ranpac" else QUICK)
    first, again = two_tasks["train1"][::2], two_tasks["train1"][1::2]
    learner.learn_task(first, ["red", "green"])
    report = learner.learn_task(again, ["green", "red"])
    assert learner.classes == ["red", "green"] and learner.tasks == [["red", "green"], []]
    assert learner.revisited == [[], ["green", "red"]] and report.classes == ("green", "red")
    preds = learner.predict([s.only("av") for s in two_tasks["test1"][:4]], top_k=2)
    assert all(sorted(p.classes) == ["green", "red"] for p in preds)
    learner.save(tmp_path)
    loaded = Learner.load(tmp_path, backbone=build_backbone("tiny"))
    assert loaded.revisited == learner.revisited and loaded.classes == learner.classes
