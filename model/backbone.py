"""The tri-modal backbone: image and text towers with expert slots, a frozen audio encoder, and P.

    v = image_projection(image_tower(images))          # (B, E)  experts inside the tower
    a = audio_projection(audio_encoder(waveforms))     # (B, E)  frozen whole, P frozen for audioclip
    t = text_projection(text_tower(tokenize(texts)))   # (B, E)  experts inside the tower

``*_projection`` are identities for the CLIP family (already in one space) and trainable linear maps
for presets whose encoders were trained apart (``lite``). Presets are registered with
:func:`register_preset` and built with :func:`build_backbone`; a preset's builder receives the weight
files the user named (``weights``) and must load them strictly.

Input preparation lives here too (``prepare_images``/``prepare_audio``): callers hand over decoded
arrays (uint8 images, float waveforms with their sample rate) and get model-ready tensors back, with
a clear :class:`~model.errors.InvalidInputError` for anything malformed.
"""

from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from model.audio import prepare_waveforms
from model.config import BackboneConfig
from model.images import prepare_images
from model.towers import Tower, deepcopy_sharing

Tokenizer = Callable[[Sequence[str]], torch.Tensor]


class TriModalBackbone(nn.Module):
    def __init__(
        self,
        config: BackboneConfig,
        *,
        image: Tower,
        text: Tower,
        audio: nn.Module,
        audio_dim: int,
        audio_projection: nn.Module,
        tokenizer: Tokenizer,
        image_size: int,
        sample_rate: int,
        clip_samples: int,
        image_projection: nn.Module | None = None,
        text_projection: nn.Module | None = None,
        projections_trainable: bool = False,
    ) -> None:
        super().__init__()
        self.config = config
        self.image = image
        self.text = text
        self.audio = audio.requires_grad_(False)
        self.audio_dim = audio_dim
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.sample_rate = sample_rate
        self.clip_samples = clip_samples
        self.projections = nn.ModuleDict(
            {
                "image": image_projection or nn.Identity(),
                "audio": audio_projection,
                "text": text_projection or nn.Identity(),
            }
        )
        self.projections.requires_grad_(projections_trainable)
        self.projections_trainable = projections_trainable
        self.audio_runner: Callable[[torch.Tensor], torch.Tensor] | None = None

    def set_audio_runner(self, runner: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        """Runs the frozen audio encoder on ``runner`` (``(B, S) -> (B, audio_dim)``); ``None``: PyTorch."""
        self.audio_runner = runner

    def __deepcopy__(self, memo: dict[int, object]) -> "TriModalBackbone":
        # Copies share every frozen tensor and runner: only learned state is duplicated, so a copy
        # being trained costs the memory of its adapters, not of a second backbone.
        frozen = [t for m in (self.audio, *self.image.frozen_modules(), *self.text.frozen_modules())
                  for t in (*m.parameters(), *m.buffers())]
        return deepcopy_sharing(self, memo, [*frozen, self.audio_runner, self.tokenizer])

    def copy_on(self, device: torch.device | str) -> "TriModalBackbone":
        """A copy with every tensor, frozen ones too, on ``device`` (runners and tokenizer shared).

        ``copy.deepcopy(backbone).to(device)`` would move the frozen tensors that the copy shares
        with this backbone; this moves nothing of this one."""
        memo: dict[int, object] = {}
        for t in (*self.parameters(), *self.buffers()):
            moved = t.detach().to(device, copy=True)
            memo[id(t)] = nn.Parameter(moved, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else moved
        return copy.deepcopy(self, memo)

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    # -- features ---------------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised images -> ``(B, E)``, through the image experts."""
        embedding: torch.Tensor = self.projections["image"](self.image(images))
        return embedding

    @torch.no_grad()
    def encode_audio_raw(self, waveforms: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` waveforms at ``sample_rate`` -> ``(B, audio_dim)``, the frozen encoder only."""
        if self.audio_runner is not None:
            return self.audio_runner(waveforms)
        features: torch.Tensor = self.audio(waveforms)
        return features

    def project_audio(self, audio_features: torch.Tensor) -> torch.Tensor:
        """``(B, audio_dim)`` -> ``(B, E)``: P, into the image space."""
        embedding: torch.Tensor = self.projections["audio"](audio_features)
        return embedding

    def encode_audio(self, waveforms: torch.Tensor) -> torch.Tensor:
        return self.project_audio(self.encode_audio_raw(waveforms))

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Strings -> ``(B, E)``, through the text experts."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        embedding: torch.Tensor = self.projections["text"](self.text(tokens))
        return embedding

    @property
    def device(self) -> torch.device:
        """Where the backbone's parameters are (and so where it computes)."""
        return next(self.image.parameters()).device

    # -- learned state ----------------------------------------------------------------------------
    LEARNED_PREFIXES = ("image.adapters.", "text.adapters.", "projections.")

    def learned_state(self) -> dict[str, torch.Tensor]:
        """Every tensor that learning can change (experts, routers, trainable projections).

        Frozen and trained-then-frozen tensors alike: this is what a saved model version holds.
        """
        state = self.state_dict()
        keep = self.LEARNED_PREFIXES if self.projections_trainable else self.LEARNED_PREFIXES[:2]
        return {k: v for k, v in state.items() if k.startswith(keep)}

    def load_learned_state(self, state: Mapping[str, torch.Tensor]) -> None:
        expected = set(self.learned_state())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(f"learned state: missing {missing[:5]}, unexpected {unexpected[:5]}")
        self.load_state_dict(dict(state), strict=False)

    # -- inputs -----------------------------------------------------------------------------------
    def prepare_images(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        return prepare_images(images, self.image_size, self.config.image_mean, self.config.image_std)

    def prepare_audio(self, waveforms: Sequence[np.ndarray], sample_rates: Sequence[int]) -> torch.Tensor:
        return prepare_waveforms(waveforms, sample_rates, self.sample_rate, self.clip_samples)

    # -- experts ----------------------------------------------------------------------------------
    def add_task_experts(self, task_key: str, n_experts: int) -> None:
        self.image.add_task_experts(task_key, n_experts)
        self.text.add_task_experts(task_key, n_experts)

    def freeze_task_experts(self, task_key: str) -> None:
        self.image.freeze_task_experts(task_key)
        self.text.freeze_task_experts(task_key)


# -- presets ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WeightFiles:
    """Files the user names for presets whose weights do not ship with the package."""

    clip: Path | None = None
    audioclip: Path | None = None
    audio_projection: Path | None = None  # optional P (512 x 1024) for audioclip; see clip_family


PresetBuilder = Callable[[WeightFiles], TriModalBackbone]
_PRESETS: dict[str, PresetBuilder] = {}
_BUILTIN_MODULES = {
    "tiny": "model.presets.clip_family",
    "audioclip": "model.presets.clip_family",
    "lite": "model.presets.lite",
}
"""Where each built-in preset is registered; a module is imported only when its preset is built,
so building ``tiny`` does not pay for ``lite``'s imports."""


def register_preset(name: str) -> Callable[[PresetBuilder], PresetBuilder]:
    def decorator(builder: PresetBuilder) -> PresetBuilder:
        _PRESETS[name] = builder
        return builder

    return decorator


def preset_names() -> list[str]:
    return sorted(set(_PRESETS) | set(_BUILTIN_MODULES))


def build_backbone(preset: str, weights: WeightFiles | None = None) -> TriModalBackbone:
    """Builds the named preset in eval mode with every frozen part frozen."""
    if preset not in _PRESETS and preset in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[preset])
    if preset not in _PRESETS:
        raise ValueError(f"preset: unknown {preset!r}; choose one of {preset_names()}")
    backbone = _PRESETS[preset](weights or WeightFiles())
    return backbone.eval()
