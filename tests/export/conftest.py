"""Shared fixtures for the export tests: exported presets, a fixed batch, experts that do something.

Exports are the slow part (torch.export traces every segment), so each preset is exported once per
test session: ``tiny`` with the command line into a temporary folder; ``lite`` into pytest's cache
folder through :func:`export.onnx.ensure_exported`, which reuses an earlier export only if its
manifest still matches the backbone's weights and files (and exports again otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from export.onnx import ensure_exported, main
from model.backbone import TriModalBackbone, build_backbone, preset_names

PRESETS = ("tiny", "lite", "audioclip")
CLASS_NAMES = ("a teacher lecturing", "a student raising a hand", "applause", "a door closing", "silence")


def skip_unless_preset(name: str) -> None:
    if name not in preset_names():
        pytest.skip(f"preset {name!r} is not registered in this checkout")
    if name == "audioclip":
        pytest.skip("the audioclip preset needs the user's CLIP ViT-B/16 and AudioCLIP weight files")


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


def add_experts(backbone: TriModalBackbone, task: str, seed: int, n_experts: int = 2) -> None:
    """Adds a task's experts with random, non-zero weights, so they change every block's output."""
    backbone.add_task_experts(task, n_experts)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in backbone.named_parameters():
            if ".adapters." in name and f".{task}" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


@dataclass
class Outputs:
    image: torch.Tensor  # (B, E)
    audio: torch.Tensor  # (B, E)
    text: torch.Tensor  # (C, E) class prototypes
    image_top1: torch.Tensor  # (B,)
    audio_top1: torch.Tensor  # (B,)

    def max_abs_diff(self, other: "Outputs") -> float:
        return max(float((a - b).abs().max()) for a, b in
                   ((self.image, other.image), (self.audio, other.audio), (self.text, other.text)))


def fixed_batch(backbone: TriModalBackbone, batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    images = torch.randn(batch, 3, backbone.image_size, backbone.image_size, generator=g)  # (B, 3, H, W)
    t = torch.arange(backbone.clip_samples) / backbone.sample_rate
    pitch = 200.0 + 100.0 * torch.arange(batch)[:, None]
    waves = 0.3 * torch.sin(2 * torch.pi * pitch * t) + 0.05 * torch.randn(batch, t.numel(), generator=g)  # (B, S)
    return images, waves.float()


@torch.no_grad()
def classify(backbone: TriModalBackbone, images: torch.Tensor, waves: torch.Tensor) -> Outputs:
    """Features and top-1 over :data:`CLASS_NAMES` by cosine similarity with the text prototypes."""
    device = next(backbone.parameters()).device
    image = backbone.encode_image(images.to(device))
    audio = backbone.encode_audio(waves.to(device))
    text = backbone.encode_text(CLASS_NAMES)
    protos = F.normalize(text, dim=-1)
    return Outputs(image, audio, text, (F.normalize(image, dim=-1) @ protos.T).argmax(-1),
                   (F.normalize(audio, dim=-1) @ protos.T).argmax(-1))
