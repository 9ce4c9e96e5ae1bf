"""Typed configuration of the backbone presets.

A preset is a :class:`BackboneConfig`: which encoders, at which size, with which input format. The
presets themselves (``audioclip``, ``tiny``, ``lite``) are registered in :mod:`model.backbone`.
Dicts become these dataclasses where they are read (a file, a CLI flag); nothing deeper takes dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from model.experts import ExpertConfig, RouterConfig


@dataclass(frozen=True)
class VisionTowerConfig:
    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    quick_gelu: bool = True

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size: {self.image_size} is not a multiple of patch_size {self.patch_size}")


@dataclass(frozen=True)
class TextTowerConfig:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    layers: int = 12
    heads: int = 8
    quick_gelu: bool = True


@dataclass(frozen=True)
class AudioEncoderConfig:
    """ESResNeXt-fbsp audio encoder. ``sample_rate`` and ``clip_seconds`` define its input."""

    sample_rate: int = 44100
    clip_seconds: float = 5.0
    n_fft: int = 2048
    hop_length: int = 561
    win_length: int = 1654
    base_width: int = 64
    groups: int = 32
    width_per_group: int = 4
    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    output_dim: int = 1024

    @property
    def clip_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_seconds))


@dataclass(frozen=True)
class BackboneConfig:
    """One preset. ``embed_dim`` is the joint space of image, projected audio and text features."""

    name: str
    embed_dim: int
    vision: VisionTowerConfig = field(default_factory=VisionTowerConfig)
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    experts: ExpertConfig = field(default_factory=ExpertConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    image_mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    logit_scale: float = 100.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.embed_dim < 1:
            raise ValueError(f"embed_dim: must be >= 1, got {self.embed_dim}")
        if self.logit_scale <= 0:
            raise ValueError(f"logit_scale: must be > 0, got {self.logit_scale}")
