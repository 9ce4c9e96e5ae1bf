"""The hybrid forward (frozen segments on a runner, experts in PyTorch) equals the PyTorch forward.

Every preset available here, every runner kind: ONNX Runtime on the CPU always runs; CUDA and
TensorRT kinds are skipped with the reason this machine gives.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from export.errors import RunnerUnavailableError
from export.manifest import Manifest
from export.onnx import ensure_exported
from export.runners import attach_runner, check_available, detach_runner
from model.backbone import build_backbone
from tests.export.conftest import PRESETS, add_experts, classify, fixed_batch

TOLERANCE = {"fp32": 1e-4, "fp16": 5e-2}
"""Max abs difference of unnormalised features (magnitudes up to ~3); fp16 carries ~3 decimal digits."""

GPU_KINDS = ("onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt")


def require(kind: str) -> torch.device:
    try:
        check_available(kind)
    except RunnerUnavailableError as exc:
        pytest.skip(f"{kind} cannot run here: {exc.missing}")
    return torch.device("cuda") if kind in GPU_KINDS else torch.device("cpu")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["onnxruntime", *GPU_KINDS])
@pytest.mark.parametrize("exported", PRESETS, indirect=True)
def test_hybrid_forward_matches_pytorch(exported: tuple[str, Path], kind: str) -> None:
    preset, folder = exported
    device = require(kind)
    backbone = build_backbone(preset).to(device)
    add_experts(backbone, "task1", seed=1)
    images, waves = fixed_batch(backbone)
    eager = classify(backbone, images, waves)

    in_use = attach_runner(backbone, kind, folder, fallback=False)
    hybrid = classify(backbone, images, waves)
    detach_runner(backbone)

    assert in_use == kind
    assert eager.max_abs_diff(hybrid) < TOLERANCE["fp32"]
    assert torch.equal(eager.image_top1, hybrid.image_top1)
    assert torch.equal(eager.audio_top1, hybrid.audio_top1)


@pytest.mark.slow
def test_fp16_segments_on_cpu_stay_close(tiny_export: Path) -> None:
    """ONNX Runtime's CPU provider runs the FP16 files too (slowly); they stay within FP16 accuracy."""
    backbone = build_backbone("tiny")
    add_experts(backbone, "task1", seed=1)
    images, waves = fixed_batch(backbone)
    eager = classify(backbone, images, waves)
    ensure_exported(backbone, tiny_export, precisions=("fp16",))
    attach_runner(backbone, "onnxruntime", tiny_export, fallback=False, precision="fp16")
    half = classify(backbone, images, waves)
    detach_runner(backbone)
    for got in (half.image, half.audio, half.text):
        assert torch.isfinite(got).all()
    assert 0 < eager.max_abs_diff(half) < TOLERANCE["fp16"]  # > 0: the FP16 files really ran
    assert torch.equal(eager.image_top1, half.image_top1)
    assert torch.equal(eager.audio_top1, half.audio_top1)
    manifest = Manifest.load(tiny_export)  # the audio encoder's FP16 export underflows: it stays FP32
    assert manifest.segment("audio.encoder").files["fp16"] == manifest.segment("audio.encoder").files["fp32"]
    assert manifest.segment("image.block.0").files["fp16"].path.endswith(".fp16.onnx")


def test_runner_is_skipped_when_gradients_are_needed(tiny_export: Path) -> None:
    """Training runs the PyTorch modules (gradients flow through later frozen blocks to earlier experts)."""
    backbone = build_backbone("tiny")
    add_experts(backbone, "task1", seed=1)
    attach_runner(backbone, "onnxruntime", tiny_export, fallback=False)
    images, _ = fixed_batch(backbone)
    feature = backbone.encode_image(images)
    feature.sum().backward()
    grads = [p.grad for n, p in backbone.named_parameters() if "image.adapters.0.experts" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
