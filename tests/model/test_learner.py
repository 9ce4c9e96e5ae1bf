"""The learner: learns, keeps old experts intact, round-trips through disk, rejects bad input whole."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from model.errors import CheckpointError, InvalidInputError, StateError
from model.fusion import ConcatFusion, FusionConfig
from model.learner import Learner
from model.learner_config import LearnerConfig
from model.samples import LabeledSample, Sample
from model.training import TrainingCancelled, TrainingConfig, with_replay
from tests.conftest import FAST


def accuracy(learner: Learner, samples: list[LabeledSample], path: str = "av") -> float:
    preds = learner.predict([s.only(path) for s in samples], top_k=1)
    return sum(p.classes[0] == s.label for p, s in zip(preds, samples)) / len(samples)


def snapshot(learner: Learner) -> dict[str, torch.Tensor]:
    return {**learner.learned_tensors(), "prototypes": learner.prototypes.clone()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def trained(tiny_backbone, two_tasks) -> Learner:
    import copy

    from model.strategies import create_strategy

    learner = Learner(copy.deepcopy(tiny_backbone), create_strategy("mcil-paper"), FAST, "tiny")
    learner.learn_task(two_tasks["train1"], ["red", "green"])
    return learner


def test_mcil_learns_a_synthetic_task_well_above_chance(trained: Learner, two_tasks) -> None:
    assert accuracy(trained, two_tasks["test1"]) >= 0.9  # chance is 0.5


def test_single_modality_samples_classify(trained: Learner, two_tasks) -> None:
    for path in ("visual", "audio"):
        preds = trained.predict([s.only(path) for s in two_tasks["test1"][:4]])
        assert {p.path for p in preds} == {path}
        assert all(set(p.classes) == {"red", "green"} for p in preds)
    assert accuracy(trained, two_tasks["test1"], "visual") >= 0.9


def test_old_experts_and_frozen_backbone_unchanged_by_a_new_task(trained: Learner, two_tasks) -> None:
    learner = trained.clone()
    state = learner.backbone.state_dict()
    before = {k: v.clone() for k, v in state.items() if "task2" not in k and "fusion" not in k}
    learner.learn_task(two_tasks["train2"], ["blue", "yellow"])
    after = learner.backbone.state_dict()
    assert any("task2" in k for k in after), "the new task added no experts"
    assert_same(before, {k: after[k] for k in before})
    counts = learner.parameter_counts()
    assert set(counts["per_task"]) == {"task1", "task2"} and counts["per_task"]["task2"] > 0


def test_save_and_load_round_trip_to_identical_predictions(trained: Learner, two_tasks, tmp_path: Path) -> None:
    trained.save(tmp_path / "v1")
    loaded = Learner.load(tmp_path / "v1", backbone=_fresh(trained))
    samples = [s.only("av") for s in two_tasks["test1"]]
    a, b = trained.predict(samples), loaded.predict(samples)
    assert [p.classes for p in a] == [p.classes for p in b]
    assert np.array_equal([p.scores for p in a], [p.scores for p in b])
    assert loaded.classes == trained.classes and loaded.tasks == trained.tasks


def _fresh(learner: Learner):
    from model.backbone import build_backbone

    return build_backbone(learner.preset)


def test_a_saved_config_keeps_the_behaviour_it_was_trained_with() -> None:
    saved_before_unit_inputs = {"fusion": {"kind": "aavfm", "threshold": -1.0}}
    assert LearnerConfig.from_dict(saved_before_unit_inputs).fusion.unit_inputs is False
    assert LearnerConfig().fusion.unit_inputs is True  # today's default, for new learners
    round_trip = LearnerConfig.from_dict(LearnerConfig().to_dict())
    assert round_trip == LearnerConfig()


def test_a_learner_records_the_fusion_it_runs(make_learner, tmp_path: Path) -> None:
    asked = replace(FAST, fusion=FusionConfig(kind="aavfm", threshold=0.5))
    concat = make_learner("finetune", config=asked)
    assert concat.config.fusion.kind == "concat" and isinstance(concat.fusion, ConcatFusion)
    concat.save(tmp_path / "v")
    assert Learner.load(tmp_path / "v").config.fusion.kind == "concat"
    assert make_learner("mcil", config=asked).config.fusion == asked.fusion


def test_load_rejects_a_partial_version(trained: Learner, tmp_path: Path) -> None:
    trained.save(tmp_path / "v")
    (tmp_path / "v" / "learned.safetensors").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="learned.safetensors"):
        Learner.load(tmp_path / "v", backbone=_fresh(trained))
    (tmp_path / "v" / "learner.json").unlink()
    with pytest.raises(CheckpointError, match="learner.json"):
        Learner.load(tmp_path / "v")


def test_predict_before_learning_is_a_state_error(make_learner: Callable[..., Learner]) -> None:
    with pytest.raises(StateError):
        make_learner().predict([Sample(image=np.zeros((8, 8), np.uint8))])


def _bad_inputs(good: list[LabeledSample]):
    img, wave = good[0].image, good[0].audio
    nan_image = img.astype(np.float32) / 255
    nan_image[0, 0, 0] = np.nan
    yield "class_names", [], good
    yield "class_names[1]", ["blue", " "], good
    yield "class_names", ["blue", "blue"], good
    yield "examples[0].label", ["red"], good  # a learned class may come again, but its examples must name it
    yield "examples[0].label", ["blue"], [replace(good[0], label="purple")]
    yield "examples", ["blue", "yellow"], [replace(g, label="blue") for g in good[:3]]  # a class with none
    yield "examples[0].image", ["blue"], [LabeledSample(image=nan_image, label="blue")]
    yield "examples[0].image", ["blue"], [LabeledSample(image=np.zeros((4, 4, 7), np.uint8), label="blue")]
    yield "examples[0].audio", ["blue"], [LabeledSample(audio=wave.copy() * np.nan, sample_rate=16000, label="blue")]
    yield "examples[0].audio", ["blue"], [LabeledSample(audio=np.zeros((2, 100), np.float32), sample_rate=16000,
                                                         label="blue")]
    yield "examples[0].audio.sample_rate", ["blue"], [LabeledSample(audio=wave, sample_rate=100, label="blue")]
    yield "examples[0].sample_rate", ["blue"], [LabeledSample(audio=wave, label="blue")]
    yield "examples[0]", ["blue"], [LabeledSample(label="blue")]


def test_bad_input_is_rejected_by_field_and_changes_nothing(trained: Learner, two_tasks) -> None:
    learner = trained.clone()
    before, classes = snapshot(learner), learner.classes
    good = [replace(s, label="blue") for s in two_tasks["train2"][:4]]
    for field, names, examples in _bad_inputs(good):
        with pytest.raises(InvalidInputError) as info:
            learner.learn_task(examples, names)
        assert info.value.field == field, (field, str(info.value))
        assert isinstance(info.value, ValueError)
        assert learner.classes == classes
        assert_same(before, snapshot(learner))


def test_cancelled_training_leaves_state_unchanged(trained: Learner, two_tasks) -> None:
    learner = trained.clone()
    before = snapshot(learner)
    with pytest.raises(TrainingCancelled):
        learner.learn_task(two_tasks["train2"], ["blue", "yellow"], should_stop=lambda: True)
    assert learner.classes == ["red", "green"]
    assert learner.backbone.image.expert_tasks == ["task1"]
    assert_same(before, snapshot(learner))


def test_progress_is_reported(make_learner, two_tasks) -> None:
    seen = []
    learner = make_learner("mcil-paper", config=replace(FAST, training=replace(FAST.training, epochs=2)))
    learner.learn_task(two_tasks["train1"], ["red", "green"], progress=seen.append)
    assert seen[0].phase == "preparing"
    assert seen[-1].step == seen[-1].steps == 8 and seen[-1].epoch == 2 and seen[-1].loss is not None


def test_a_small_task_trains_whole_epochs_until_min_steps(make_learner, two_tasks) -> None:
    seen = []
    training = replace(FAST.training, epochs=2, min_steps=10)  # 4 steps per epoch on train1
    learner = make_learner("mcil-paper", config=replace(FAST, training=training))
    report = learner.learn_task(two_tasks["train1"], ["red", "green"], progress=seen.append)
    assert report.steps == seen[-1].steps == 12 and seen[-1].epoch == seen[0].epochs == 3


@pytest.mark.parametrize("strategy", ["icarl", "joint"])
def test_preparing_announces_the_epochs_of_the_data_actually_trained_on(make_learner, two_tasks, strategy) -> None:
    """`icarl` and `joint` train a task on its examples plus stored ones (exemplars, earlier tasks):
    the budget, and so the epoch count announced before training, follows that larger set."""
    training = replace(FAST.training, epochs=1, min_steps=12)  # 60 examples alone: 4 steps/epoch, 3 epochs
    learner = make_learner(strategy, config=replace(FAST, training=training))
    learner.learn_task(two_tasks["train1"], ["red", "green"])
    seen = []
    learner.learn_task(two_tasks["train2"], ["blue", "yellow"], progress=seen.append)
    assert seen[0].phase == "preparing"
    assert seen[0].epochs == seen[-1].epochs == seen[-1].epoch == 2  # 100 or 120 examples: 7 or 8 steps/epoch


def test_min_steps_adds_epochs_only_to_tasks_too_small_to_reach_it() -> None:
    config = TrainingConfig(epochs=5, min_steps=70, batch_size=32)
    assert config.epochs_for(450) == 5  # 15 steps per epoch: 75 in 5 epochs
    assert config.epochs_for(225) == 9  # 8 steps per epoch: 72 in 9 epochs
    assert config.epochs_for(10) == 70
    assert TrainingConfig(epochs=5, min_steps=0).epochs_for(10) == 5
    with pytest.raises(ValueError, match="min_steps"):
        TrainingConfig(min_steps=-1)


def test_a_config_saved_before_min_steps_trains_exactly_its_epochs() -> None:
    saved = LearnerConfig().to_dict()
    del saved["training"]["min_steps"]
    assert LearnerConfig.from_dict(saved).training.min_steps == 0
    assert LearnerConfig().training.min_steps == 70


def test_aavfm_fuses_when_correlation_passes_the_threshold(make_learner, two_tasks) -> None:
    config = replace(FAST, fusion=FusionConfig(threshold=-1.0), training=replace(FAST.training, epochs=1))
    learner = make_learner("mcil-paper", config=config)
    learner.learn_task(two_tasks["train1"], ["red", "green"])
    assert {p.path for p in learner.predict(two_tasks["test1"][:5])} == {"av"}


def test_replay_weighting_counts_every_class_alike(trained: Learner, make_learner) -> None:
    """Two old classes (``trained``) and one new: the replayed loss stands for two classes of three."""
    new, replayed = torch.tensor(2.0), torch.tensor(4.0)
    assert len(trained.classes) == 2
    assert float(with_replay(trained, new, replayed, 1)) == pytest.approx((1 * 2.0 + 2 * 4.0) / 3)
    equal = make_learner("mcil-paper", config=replace(FAST, replay_weighting="equal"))
    assert float(with_replay(equal, new, replayed, 1)) == pytest.approx(6.0)


def test_a_config_saved_before_replay_weighting_keeps_equal_weights() -> None:
    assert LearnerConfig.from_dict({}).replay_weighting == "equal"
    assert LearnerConfig().replay_weighting == "per-class"
    with pytest.raises(ValueError, match="replay_weighting"):
        LearnerConfig(replay_weighting="balanced")


def test_a_recording_sent_with_several_pictures_is_encoded_once(tiny_backbone, two_tasks) -> None:
    from model.batch import encode_samples

    clips = two_tasks["train1"][:3]
    samples = [LabeledSample(image=other.image, audio=clip.audio, sample_rate=clip.sample_rate, label=clip.label)
               for clip in clips for other in two_tasks["train1"][3:6]]  # each clip with three pictures
    seen: list[int] = []
    backbone = copy.deepcopy(tiny_backbone)
    backbone.set_audio_runner(lambda waves: (seen.append(len(waves)), backbone.audio(waves))[1])
    batch = encode_samples(backbone, samples)
    assert sum(seen) == 3  # three recordings, nine samples
    alone = encode_samples(backbone, clips)
    for i in range(9):
        assert torch.equal(batch.audio[i], alone.audio[i // 3])
