"""The learner with a statistics head: exact through the learner, features that stop moving,
bad input that changes nothing, a class never taught answered as unknown."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from model.backbone import build_backbone
from model.errors import InvalidInputError
from model.heads import HeadConfig, StatisticsHead
from model.learner import Learner
from model.samples import LabeledSample, Sample
from model.training import seed_learning
from tests.conftest import FAST


def _labels(learner: Learner, examples: list[LabeledSample], offset: int, names: list[str]) -> list[int]:
    return [offset + names.index(e.label) for e in examples]


def test_head_after_two_tasks_equals_the_head_fitted_once(make_learner, two_tasks) -> None:
    learner = make_learner("ranpac", config=replace(FAST, head=HeadConfig(expansion=256)))
    learner.learn_task(two_tasks["train1"], ["red", "green"])
    learner.learn_task(two_tasks["train2"], ["blue", "yellow"])
    names = ["red", "green", "blue", "yellow"]
    # Each task's features as the learner computed them, task by task: a network's output can differ
    # in its last bits with the batch it ran in, and that is the encoder's, not the head's, to answer for.
    features: dict[str, list[torch.Tensor]] = {}
    labels: dict[str, list[torch.Tensor]] = {}
    for task in ("train1", "train2"):
        data = learner.encode_inputs(two_tasks[task], labels=_labels(learner, two_tasks[task], 0, names))
        for path, (rows, x) in learner.head_inputs(data).items():
            features.setdefault(path, []).append(x)
            labels.setdefault(path, []).append(data.labels[rows])
    assert learner.head is not None
    once = StatisticsHead("analytic", learner.config.head, learner.head.input_dims)
    once.learn({p: torch.cat(x) for p, x in features.items()}, {p: torch.cat(y) for p, y in labels.items()}, 4)
    for path, ref in once.weights.items():
        assert torch.linalg.norm(learner.head.weights[path] - ref) <= 1e-6 * torch.linalg.norm(ref)


def test_mcil_trains_nothing_by_default_and_reads_the_frozen_encoders(make_learner, two_tasks) -> None:
    learner = make_learner("mcil")
    report = learner.learn_task(two_tasks["train1"], ["red", "green"])
    assert report.steps == 0 and report.trainable_parameters == 0
    assert learner.backbone.image.expert_tasks == [] and learner.config.head.features == "frozen"
    assert learner.config.head.fuse == "weighted"


def test_adapted_mcil_features_stop_moving_after_the_first_task(make_learner, two_tasks) -> None:
    learner = make_learner("mcil", config=replace(FAST, head=HeadConfig(features="adapted")))
    report = learner.learn_task(two_tasks["train1"], ["red", "green"])
    assert report.steps > 0  # the first task adapts the experts, projections and fusion
    data = learner.encode_inputs(two_tasks["test1"], labels=[0] * len(two_tasks["test1"]))
    before = learner.head_inputs(data)
    report = learner.learn_task(two_tasks["train2"], ["blue", "yellow"])
    assert report.steps == 0 and learner.backbone.image.expert_tasks == ["task1"]
    after = learner.head_inputs(data)
    assert all(torch.equal(before[p][1], after[p][1]) for p in before)


def test_a_class_with_too_few_examples_is_refused_and_the_learner_is_unchanged(make_learner, two_tasks,
                                                                               tmp_path: Path) -> None:
    learner = make_learner("simplecil")
    learner.learn_task(two_tasks["train1"], ["red", "green"])
    learner.save(tmp_path / "before")
    lonely = two_tasks["train2"][:1]
    lonely = [LabeledSample(image=s.image, audio=s.audio, sample_rate=s.sample_rate, label="blue") for s in lonely]
    with pytest.raises(InvalidInputError, match="examples"):
        learner.learn_task(lonely + [s for s in two_tasks["train2"] if s.label == "yellow"], ["blue", "yellow"])
    assert learner.classes == ["red", "green"]
    learner.save(tmp_path / "after")
    for name in ("head.safetensors", "learner.json"):
        assert (tmp_path / "before" / name).read_bytes() == (tmp_path / "after" / name).read_bytes()


def test_a_class_never_taught_comes_back_unknown(make_learner, two_tasks) -> None:
    seed_learning(0)  # the first task's experts start from the same weights whatever ran before
    learner = make_learner("mcil")
    learner.learn_task(two_tasks["train1"], ["red", "green"])
    known = learner.predict([s.only("av") for s in two_tasks["test1"]])
    rng = np.random.default_rng(7)  # nothing like either class: noise images and noise sounds
    strangers = learner.predict([Sample(image=rng.integers(0, 255, (32, 32, 3), dtype=np.uint8),
                                        audio=rng.uniform(-1, 1, 8000).astype(np.float32), sample_rate=16000)
                                 for _ in range(20)])
    assert sum(p.unknown for p in known) <= 2
    assert sum(p.unknown for p in strangers) >= 15
    assert all(0.0 <= s <= 1.0 for p in known for s in p.scores)


def test_a_version_saved_before_heads_existed_loads_with_the_prototypes_head(make_learner, two_tasks,
                                                                                tmp_path: Path) -> None:
    learner = make_learner("mcil-paper")
    learner.learn_task(two_tasks["train1"], ["red", "green"])
    learner.save(tmp_path)
    meta = json.loads((tmp_path / "learner.json").read_text())
    del meta["config"]["head"]
    meta["strategy"] = "mcil-paper"
    (tmp_path / "learner.json").write_text(json.dumps(meta))
    loaded = Learner.load(tmp_path, backbone=build_backbone("tiny"))
    assert loaded.config.head.kind == "prototypes" and loaded.head is None
