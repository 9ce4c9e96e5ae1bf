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
    """ESResNeXt-fbsp audio encoder (see :mod:`model.encoders.esresnext`).

    ``sample_rate`` and ``clip_seconds`` define its input. The front end frames the waveform with a
    ``window`` of ``win_length`` samples every ``hop_length`` samples (zero-padded to ``n_fft``) and
    applies a learned ``n_fft``-point frequency-B-spline transform. The trunk is a ResNeXt with
    ``base_width`` stem channels, four stages of ``layers`` bottleneck blocks, ``groups`` groups of
    ``width_per_group`` channels in the first stage (doubling per stage), optional attention
    branches (``attention``), global pooling and a linear map to ``output_dim``.
    The defaults are AudioCLIP's (ResNeXt-50 32x4d, 44.1 kHz, 5 s, 1024-d).
    """

    sample_rate: int = 44100
    clip_seconds: float = 5.0
    n_fft: int = 2048
    hop_length: int = 561
    win_length: int = 1654
    window: str = "blackmanharris"
    base_width: int = 64
    groups: int = 32
    width_per_group: int = 4
    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    attention: bool = True
    output_dim: int = 1024

    WINDOWS = ("blackmanharris", "hann", "boxcar")

    def __post_init__(self) -> None:
        if self.sample_rate < 1:
            raise ValueError(f"sample_rate: must be >= 1, got {self.sample_rate}")
        if self.clip_seconds <= 0:
            raise ValueError(f"clip_seconds: must be > 0, got {self.clip_seconds}")
        if self.hop_length < 1:
            raise ValueError(f"hop_length: must be >= 1, got {self.hop_length}")
        if not 1 <= self.win_length <= self.n_fft:
            raise ValueError(f"win_length: must lie in [1, n_fft={self.n_fft}], got {self.win_length}")
        if (self.n_fft // 2 + 1) < 3:
            raise ValueError(f"n_fft: must give at least 3 frequency bins, got {self.n_fft}")
        if self.clip_samples < self.win_length:
            raise ValueError(f"clip_seconds: {self.clip_samples} samples is shorter than win_length")
        if self.window not in self.WINDOWS:
            raise ValueError(f"window: must be one of {self.WINDOWS}, got {self.window!r}")
        for name in ("base_width", "groups", "width_per_group", "output_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if len(self.layers) != 4 or any(n < 1 for n in self.layers):
            raise ValueError(f"layers: expected four block counts >= 1, got {self.layers}")

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
