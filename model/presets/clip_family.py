"""The paper's backbone family: CLIP image and text transformers, ESResNeXt-fbsp audio, frozen P.

- ``audioclip``: CLIP ViT-B/16 (512-d joint space, QuickGELU, as OpenAI released it) and AudioCLIP's
  ESResNeXt-fbsp (1024-d, mono 44.1 kHz, 5 s clips). Weights come from the files the user names in
  :class:`model.backbone.WeightFiles`:

  - ``clip``: OpenAI's ViT-B/16 weights (the released TorchScript ``ViT-B-16.pt``, or its state
    dict saved with ``torch.save``/safetensors). Image and text towers load from it strictly.
  - ``audioclip``: an AudioCLIP checkpoint (``AudioCLIP-Full-Training.pt`` or
    ``AudioCLIP-Partial-Training.pt``); its ``audio.*`` tensors load strictly into the audio encoder.
    Its other tensors (AudioCLIP's own ResNet-50 CLIP) are not used.
  - ``audio_projection`` (optional): P, a file holding one tensor ``weight`` of shape (512, 1024)
    (read from ``WeightFiles.audio_projection`` when that field exists; :func:`build_from_files`
    takes it directly).

- ``tiny``: the same family at toy size, initialised from ``config.seed`` (two builds are
  bit-identical), for tests.

Where P comes from. AudioCLIP trained its audio head into the 1024-d joint space of its ResNet-50
CLIP; the ViT-B/16 space is 512-d, and AudioCLIP's checkpoints hold no map between the two. The
paper calls P "a frozen linear layer" without saying how it is set. So P is a file the user may name
(for a P fitted on their own paired data); without one, P is a seeded semi-orthogonal map
(orthonormal rows, ``torch.nn.init.orthogonal_`` under ``config.seed``), which preserves the
geometry of the audio features inside the 512 directions it keeps. The fusion module, trained per
task, learns to use the projected audio feature either way.
"""

from __future__ import annotations

import functools
from pathlib import Path

import open_clip
import torch
from torch import nn

from model.backbone import TriModalBackbone, WeightFiles, register_preset
from model.config import AudioEncoderConfig, BackboneConfig, TextTowerConfig, VisionTowerConfig
from model.encoders import checkpoints
from model.encoders.clip import build_text_transformer, build_vision_transformer, image_tower, text_tower
from model.encoders.esresnext import ESResNeXtFBSP
from model.errors import InvalidInputError
from model.experts import ExpertConfig, RouterConfig, lora_expert_factory

AUDIOCLIP_CONFIG = BackboneConfig(
    name="audioclip",
    embed_dim=512,
    vision=VisionTowerConfig(image_size=224, patch_size=16, width=768, layers=12, heads=12, quick_gelu=True),
    text=TextTowerConfig(context_length=77, vocab_size=49408, width=512, layers=12, heads=8, quick_gelu=True),
    audio=AudioEncoderConfig(),
)

TINY_CONFIG = BackboneConfig(
    name="tiny",
    embed_dim=32,
    vision=VisionTowerConfig(image_size=32, patch_size=8, width=32, layers=2, heads=2, quick_gelu=True),
    text=TextTowerConfig(context_length=32, vocab_size=49408, width=32, layers=2, heads=2, quick_gelu=True),
    audio=AudioEncoderConfig(
        sample_rate=16000,
        clip_seconds=1.0,
        n_fft=256,
        hop_length=128,
        win_length=256,
        window="hann",
        base_width=8,
        groups=2,
        width_per_group=4,
        layers=(1, 1, 1, 1),
        attention=True,
        output_dim=64,
    ),
    experts=ExpertConfig(bottleneck=16, rank=4),
    router=RouterConfig(hidden=16, top_k=2),
)


def clip_tokenizer(context_length: int) -> functools.partial[torch.Tensor]:
    """open_clip's CLIP BPE tokenizer (vocabulary ships with the package): strings -> ``(B, L)`` ids."""
    return functools.partial(open_clip.tokenize, context_length=context_length)


def frozen_projection(in_dim: int, out_dim: int) -> nn.Linear:
    """P without a file: a bias-free linear map with orthonormal rows, from the current RNG state."""
    p = nn.Linear(in_dim, out_dim, bias=False)
    nn.init.orthogonal_(p.weight)
    return p.requires_grad_(False)


def build_clip_family(
    config: BackboneConfig,
    *,
    clip_state: dict[str, torch.Tensor] | None = None,
    clip_source: str = "",
    audio_state: dict[str, torch.Tensor] | None = None,
    audio_source: str = "",
    projection_state: dict[str, torch.Tensor] | None = None,
    projection_source: str = "",
) -> TriModalBackbone:
    """Builds a backbone of this family from ``config``, loading whichever states are given.

    Everything not loaded is initialised under ``torch.manual_seed(config.seed)`` (the global RNG
    state is restored afterwards), so a build is a pure function of its arguments.
    Raises :class:`~model.errors.CheckpointError` if a state does not match the architecture.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        vit = build_vision_transformer(config.vision, config.embed_dim)
        text = build_text_transformer(config.text, config.embed_dim)
        audio = ESResNeXtFBSP(config.audio)
        projection = frozen_projection(config.audio.output_dim, config.embed_dim)

        # Load into the open_clip modules before they are cut into towers (their names are OpenAI's).
        if clip_state is not None:
            checkpoints.load_clip_weights(vit, text, clip_state, clip_source)
        if audio_state is not None:
            checkpoints.load_audioclip_audio_weights(audio, audio_state, audio_source)
        if projection_state is not None:
            checkpoints.load_strict(projection, projection_state, projection_source)

        factory = lora_expert_factory(config.experts)
        return TriModalBackbone(
            config,
            image=image_tower(vit, factory, config.router),
            text=text_tower(text, factory, config.router),
            audio=audio,
            audio_dim=config.audio.output_dim,
            audio_projection=projection,
            tokenizer=clip_tokenizer(config.text.context_length),
            image_size=config.vision.image_size,
            sample_rate=config.audio.sample_rate,
            clip_samples=config.audio.clip_samples,
        )


@register_preset("tiny")
def build_tiny(weights: WeightFiles) -> TriModalBackbone:
    """The toy member of the family; ignores weight files (its weights are its seed)."""
    return build_clip_family(TINY_CONFIG)


def _weight_file(path: str | Path | None, field: str, what: str) -> Path:
    if path is None:
        raise InvalidInputError(
            f"weights.{field}", f"the audioclip preset needs {what}; name it in WeightFiles.{field}"
        )
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"weights.{field}", f"no such file: {path}")
    return path


def build_from_files(
    clip: str | Path | None,
    audioclip: str | Path | None,
    audio_projection: str | Path | None = None,
    config: BackboneConfig = AUDIOCLIP_CONFIG,
) -> TriModalBackbone:
    """Builds ``config`` (the ``audioclip`` preset unless told otherwise) from weight files.

    Raises:
        InvalidInputError: a required file is not named, or does not exist (field ``weights.<name>``).
        CheckpointError: a file does not match the architecture (naming the first offending tensor).
    """
    clip_path = _weight_file(clip, "clip", "OpenAI's CLIP ViT-B/16 weights (ViT-B-16.pt)")
    audio_path = _weight_file(audioclip, "audioclip", "an AudioCLIP checkpoint (AudioCLIP-Full-Training.pt)")
    projection_path = None
    if audio_projection is not None:
        what = "P, a file with one tensor 'weight'"
        projection_path = _weight_file(audio_projection, "audio_projection", what)
    return build_clip_family(
        config,
        clip_state=checkpoints.read_state_dict(clip_path),
        clip_source=str(clip_path),
        audio_state=checkpoints.read_state_dict(audio_path),
        audio_source=str(audio_path),
        projection_state=None if projection_path is None else checkpoints.read_state_dict(projection_path),
        projection_source=str(projection_path or ""),
    )


@register_preset("audioclip")
def build_audioclip(weights: WeightFiles) -> TriModalBackbone:
    """The paper's backbone from the user's CLIP ViT-B/16 and AudioCLIP files (and optionally P)."""
    return build_from_files(weights.clip, weights.audioclip, getattr(weights, "audio_projection", None))
