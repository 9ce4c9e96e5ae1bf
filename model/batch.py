"""What flows through the learner: model-ready inputs (``EncodedBatch``) and forward outputs.

``EncodedBatch`` holds images ready for the image tower and the frozen audio encoder's features (it
runs once per sample per task, never per training step), with masks of which inputs each sample
has. ``ForwardOutput`` holds what one forward pass gives: scores, unimodal and fused features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from model.fusion import FusionOutput

_BATCH_FIELDS = ("images", "audio", "has_image", "has_audio", "labels")


@dataclass
class EncodedBatch:
    """Model-ready inputs: images, frozen audio features, masks and (for training) labels."""

    images: torch.Tensor  # (B, 3, H, W), zeros where has_image is False
    audio: torch.Tensor  # (B, audio_dim) frozen audio-encoder features, zeros where missing
    has_image: torch.Tensor  # (B,) bool
    has_audio: torch.Tensor  # (B,) bool
    labels: torch.Tensor  # (B,) long class index; -1 when unlabelled

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device) -> "EncodedBatch":
        return EncodedBatch(*(getattr(self, f).to(device) for f in _BATCH_FIELDS))

    def select(self, index: torch.Tensor) -> "EncodedBatch":
        return EncodedBatch(self.images[index], self.audio[index], self.has_image[index], self.has_audio[index],
                            self.labels[index])

    @staticmethod
    def concat(batches: Sequence["EncodedBatch"]) -> "EncodedBatch":
        return EncodedBatch(*(torch.cat([getattr(b, f) for b in batches]) for f in _BATCH_FIELDS))


TaskData = EncodedBatch


@dataclass
class ForwardOutput:
    logits: torch.Tensor  # (B, C)
    fused: torch.Tensor  # (B, E)
    visual: torch.Tensor  # (B, E)
    audio: torch.Tensor  # (B, E)
    fusion: FusionOutput
    # (B,) bool: the statistics head found the sample unlike every learned class; None: not judged.
    unknown: torch.Tensor | None = None

    @staticmethod
    def concat(outputs: Sequence["ForwardOutput"]) -> "ForwardOutput":
        """The outputs of consecutive chunks of one batch, as one output."""
        names = ("logits", "fused", "visual", "audio")
        tensors = {name: torch.cat([getattr(o, name) for o in outputs]) for name in names}
        return ForwardOutput(**tensors, fusion=FusionOutput.concat([o.fusion for o in outputs]))
