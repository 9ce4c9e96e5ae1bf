"""Class feature statistics and their replay: exact statistics, honest sampling, and the effect on
forgetting that is their reason to exist."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from model.errors import CheckpointError
from model.learner import Learner
from model.replay import ClassStatistics
from model.strategies import create_strategy
from tests.conftest import FAST


def _statistics() -> tuple[ClassStatistics, dict[str, torch.Tensor], torch.Tensor]:
    torch.manual_seed(0)
    features = {"visual": torch.randn(12, 4), "audio": torch.randn(12, 4)}
    labels = torch.tensor([0] * 6 + [1] * 6)
    present = {"visual": torch.ones(12, dtype=torch.bool), "audio": labels == 0}  # class 1 has no audio
    stats = ClassStatistics(4)
    stats.add_classes(features, present, labels, 2)
    return stats, features, labels


def test_statistics_are_the_per_class_mean_and_spread() -> None:
    stats, features, labels = _statistics()
    assert len(stats) == 2
    for c in (0, 1):
        rows = features["visual"][labels == c]
        assert torch.allclose(stats.mean["visual"][c], rows.mean(0))
        assert torch.allclose(stats.std["visual"][c], rows.std(0, unbiased=False))
    assert torch.allclose(stats.mean["audio"][0], features["audio"][:6].mean(0))
    assert stats.mean["audio"][1].isnan().all()  # no audio for class 1: never drawn for audio


def test_samples_follow_the_statistics_and_skip_missing_modalities() -> None:
    stats, _, _ = _statistics()
    v, a, has_v, has_a, labels = stats.sample(4000, torch.Generator().manual_seed(0))
    assert has_v.all() and torch.equal(has_a, labels == 0)
    assert torch.equal(a[labels == 1], torch.zeros_like(a[labels == 1]))
    for c in (0, 1):
        drawn = v[labels == c]
        assert torch.allclose(drawn.mean(0), stats.mean["visual"][c], atol=0.1)
        assert torch.allclose(drawn.std(0), stats.std["visual"][c], rtol=0.1)


def test_state_round_trip_and_a_wrong_shape_names_the_tensor() -> None:
    stats, _, _ = _statistics()
    loaded = ClassStatistics(4)
    loaded.load_state_dict(stats.state_dict(), 2)
    for kind in ("mean", "std"):
        for m in ("visual", "audio"):
            assert torch.equal(getattr(loaded, kind)[m].nan_to_num(7.0), getattr(stats, kind)[m].nan_to_num(7.0))
    state = stats.state_dict()
    state["audio_std"] = state["audio_std"][:1]
    with pytest.raises(ValueError, match="audio_std"):
        ClassStatistics(4).load_state_dict(state, 2)


def _old_task_accuracy(learner: Learner, samples) -> float:
    preds = learner.predict([s.only("av") for s in samples], top_k=1)
    return sum(p.classes[0] == s.label for p, s in zip(preds, samples)) / len(samples)


def test_replay_keeps_old_classes_that_are_lost_without_it(tiny_backbone, two_tasks) -> None:
    """The reason for replay, on the synthetic tasks: after a second task, old classes survive with
    it and are lost without it (the new prototypes win every old input)."""
    accuracy = {}
    for n in (0, 32):
        learner = Learner(copy.deepcopy(tiny_backbone), create_strategy("mcil-paper"), replace(FAST, replayed_features=n),
                          "tiny")
        learner.learn_task(two_tasks["train1"], ["red", "green"])
        learner.learn_task(two_tasks["train2"], ["blue", "yellow"])
        accuracy[n] = _old_task_accuracy(learner, two_tasks["test1"])
        assert _old_task_accuracy(learner, two_tasks["test2"]) >= 0.8
    assert accuracy[32] >= 0.6 and accuracy[32] > accuracy[0] + 0.3, accuracy


def test_statistics_are_saved_with_the_version(tiny_backbone, two_tasks, tmp_path: Path) -> None:
    from model.backbone import build_backbone

    learner = Learner(copy.deepcopy(tiny_backbone), create_strategy("mcil-paper"), FAST, "tiny")
    learner.learn_task(two_tasks["train1"], ["red", "green"])
    learner.save(tmp_path / "v")
    loaded = Learner.load(tmp_path / "v", backbone=build_backbone("tiny"))
    assert torch.equal(loaded.class_statistics.mean["visual"], learner.class_statistics.mean["visual"])
    assert torch.equal(loaded.class_statistics.std["audio"], learner.class_statistics.std["audio"])

    path = tmp_path / "v" / "prototypes.safetensors"
    state = load_file(str(path))
    del state["visual_mean"]
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match="visual_mean"):
        Learner.load(tmp_path / "v", backbone=build_backbone("tiny"))
