"""attach_runner: selection, fallback order and its log lines, reuse across learned tasks and copies."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

from export.errors import RunnerUnavailableError
from export.onnx import ensure_exported
from export.runners import RUNNER_KINDS, attach_runner, check_available, default_artifacts_dir, detach_runner
from model.backbone import build_backbone
from model.learner import create_learner
from model.learner_config import LearnerConfig
from model.synthetic import make_dataset
from model.training import TrainingConfig
from tests.export.conftest import add_experts, classify, fixed_batch


def unavailable(kind: str) -> bool:
    try:
        check_available(kind)
    except RunnerUnavailableError:
        return True
    return False


def test_unknown_kind_and_precision_are_rejected(tiny_export: Path) -> None:
    backbone = build_backbone("tiny")
    with pytest.raises(ValueError, match="runner: unknown 'onnx'"):
        attach_runner(backbone, "onnx", tiny_export)
    with pytest.raises(ValueError, match="precision"):
        attach_runner(backbone, "onnxruntime", tiny_export, precision="int8")
    assert backbone.image.runner is None and backbone.audio_runner is None


def test_pytorch_runner_detaches(tiny_export: Path, caplog: pytest.LogCaptureFixture) -> None:
    backbone = build_backbone("tiny")
    assert attach_runner(backbone, "onnxruntime", tiny_export) == "onnxruntime"
    assert backbone.image.runner is not None and backbone.audio_runner is not None
    with caplog.at_level(logging.INFO, logger="export"):
        assert attach_runner(backbone, "pytorch", None) == "pytorch"
    assert backbone.image.runner is None and backbone.text.runner is None and backbone.audio_runner is None
    assert "frozen backbone runner: pytorch" in caplog.text


@pytest.mark.skipif(not unavailable("tensorrt"), reason="TensorRT runs here, so it would not fall back")
def test_unavailable_kind_falls_back_in_order_and_says_so(tiny_export: Path, caplog: pytest.LogCaptureFixture) -> None:
    backbone = build_backbone("tiny")
    expected = next(k for k in RUNNER_KINDS if not unavailable(k))
    with caplog.at_level(logging.INFO, logger="export"):
        assert attach_runner(backbone, "tensorrt", tiny_export) == expected
    skipped = RUNNER_KINDS[: RUNNER_KINDS.index(expected)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w.split()[3] for w in warnings] == list(skipped)  # "frozen backbone runner <kind> unavailable"
    assert f"frozen backbone runner: {expected} (" in caplog.text

    with pytest.raises(RunnerUnavailableError) as err:
        attach_runner(backbone, "tensorrt", tiny_export, fallback=False)
    assert err.value.kind == "tensorrt" and err.value.missing


@pytest.mark.slow
def test_default_artifacts_folder_is_reused(tiny_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_artifacts_dir("tiny") == tmp_path / "mcil-daemon" / "export" / "tiny"
    shutil.copytree(tiny_export, default_artifacts_dir("tiny"))
    with caplog.at_level(logging.INFO, logger="export"):
        assert attach_runner(build_backbone("tiny"), "onnxruntime", None) == "onnxruntime"
    assert f"manifest in {default_artifacts_dir('tiny')}" in caplog.text


@pytest.mark.slow
def test_segments_built_before_learning_stay_correct_after_it(tiny_export: Path) -> None:
    """LearnNewClasses adds experts; the frozen segments (and sessions) attached before stay valid."""
    learner = create_learner("tiny", "mcil-paper", config=LearnerConfig(training=TrainingConfig(epochs=1, batch_size=16)))
    backbone = learner.backbone
    assert attach_runner(backbone, "onnxruntime", tiny_export, fallback=False) == "onnxruntime"
    runner = backbone.image.runner
    images, waves = fixed_batch(backbone)

    for task, names in enumerate((["red", "green"], ["blue", "yellow"])):
        learner.learn_task(make_dataset(names, 4, seed=task, first_index=2 * task), names)
        assert backbone.image.runner is runner  # nothing was re-attached or re-exported
        hybrid = classify(backbone, images, waves)
        eager_copy = learner.clone()  # copies share the runner ...
        assert eager_copy.backbone.image.runner is runner
        detach_runner(eager_copy.backbone)  # ... until told otherwise, leaving the original attached
        eager = classify(eager_copy.backbone, images, waves)
        assert backbone.image.runner is runner
        assert eager.max_abs_diff(hybrid) < 1e-4
        assert torch.equal(eager.image_top1, hybrid.image_top1)
    assert len(backbone.image.expert_tasks) == 2
    _, exported = ensure_exported(backbone, tiny_export)
    assert not exported


def test_experts_change_the_output_the_runner_produces(tiny_export: Path) -> None:
    """Guards the parity tests: with random experts the features really differ from none."""
    backbone = build_backbone("tiny")
    attach_runner(backbone, "onnxruntime", tiny_export, fallback=False)
    images, waves = fixed_batch(backbone)
    plain = classify(backbone, images, waves)
    add_experts(backbone, "task1", seed=1)
    assert plain.max_abs_diff(classify(backbone, images, waves)) > 1e-2
