"""What flows through the learner: model-ready inputs (``EncodedBatch``) and forward outputs.

``EncodedBatch`` holds images ready for the image tower and the frozen audio encoder's features (it
runs once per sample per task, never per training step), with masks of which inputs each sample
has. ``ForwardOutput`` holds what one forward pass gives: scores, unimodal and fused features.

How inputs get here: :func:`validate_task` checks a task's examples and class names, and
:func:`encode_samples` checks each sample and encodes it (``Learner.encode_inputs``). Both raise
``InvalidInputError`` before anything changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from model.backbone import TriModalBackbone
from model.errors import InvalidInputError
from model.fusion import FusionOutput
from model.samples import LabeledSample, Sample
from serving.inputs import check_samples, recording_key

ENCODE_CHUNK = 16
"""Samples encoded, or run forward at inference, at a time. 16, not more: EfficientNet-Lite0's
activations at 160 pixels for 64 images took 580 MB at once; the ESC-CIFAR benchmark process peaked
at 3,094 MiB with 64 and 2,503 MiB with 16, and its tasks took 10.0-11.7 s against 7.6-9.0 s
(docs/benchmarks.md, "Cost")."""

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

    def chunks(self, size: int = ENCODE_CHUNK) -> Iterator["EncodedBatch"]:
        """Consecutive pieces of at most ``size`` samples, in order."""
        for start in range(0, len(self), size):
            yield self.select(torch.arange(start, min(start + size, len(self))))


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


def encode_samples(backbone: TriModalBackbone, samples: Sequence[Sample], field: str = "samples",
                   labels: Sequence[int] | None = None) -> EncodedBatch:
    """Validates and prepares samples; runs the frozen audio encoder. The batch is on ``backbone``'s
    device. Raises InvalidInputError (naming ``field[i]``)."""
    if len(samples) == 0:
        raise InvalidInputError(field, "no samples given")
    b = backbone
    for i, s in enumerate(samples):
        if not isinstance(s, Sample):
            raise InvalidInputError(f"{field}[{i}]", f"expected a Sample, got {type(s).__name__}")
    check_samples(samples, field)
    n = len(samples)
    has_image = torch.tensor([s.image is not None for s in samples])
    has_audio = torch.tensor([s.audio is not None for s in samples])
    images = torch.zeros(n, 3, b.image_size, b.image_size)
    rows = has_image.nonzero().flatten().tolist()
    for start in range(0, len(rows), ENCODE_CHUNK):
        chunk = rows[start:start + ENCODE_CHUNK]
        images[chunk] = b.prepare_images([samples[i].image for i in chunk])
    audio = torch.zeros(n, b.audio_dim)
    # A recording sent with several pictures (ESC-CIFAR pairs each clip with six or seven photos; a
    # clip's frames share its sound) is encoded once: the audio encoder is the costly part of a pair.
    first: dict[tuple[bytes, int], int] = {}
    same_as = {i: first.setdefault(recording_key(samples[i]), i) for i in has_audio.nonzero().flatten().tolist()}
    rows = sorted(set(same_as.values()))
    with torch.no_grad():
        for start in range(0, len(rows), ENCODE_CHUNK):
            chunk = rows[start:start + ENCODE_CHUNK]
            waves = b.prepare_audio([samples[i].audio for i in chunk], [samples[i].sample_rate for i in chunk])
            audio[chunk] = b.encode_audio_raw(waves.to(b.device)).cpu()
    for i, j in same_as.items():
        if i != j:
            audio[i] = audio[j]
    label_tensor = torch.full((n,), -1, dtype=torch.long) if labels is None else torch.tensor(labels)
    return EncodedBatch(images, audio, has_image, has_audio, label_tensor).to(b.device)


def validate_task(examples: Sequence[LabeledSample], class_names: Sequence[str], learned: Sequence[str]) -> list[str]:
    """The task's class names, stripped, once its examples and names are valid: at least one name,
    none empty or repeated; every example a LabeledSample of one of them, every name with an example.
    Names in ``learned`` are allowed: their examples add to classes already learned (a
    domain-incremental task: the same classes, from a new speaker or camera). Raises InvalidInputError."""
    if isinstance(class_names, str) or len(class_names) == 0:
        raise InvalidInputError("class_names", "give at least one class name")
    names = []
    for i, name in enumerate(class_names):
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError(f"class_names[{i}]", "empty class name")
        names.append(name.strip())
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InvalidInputError("class_names", f"duplicate class name(s) {dup}")
    if len(examples) == 0:
        raise InvalidInputError("examples", "no examples given")
    counts = dict.fromkeys(names, 0)
    for i, ex in enumerate(examples):
        if not isinstance(ex, LabeledSample):
            raise InvalidInputError(f"examples[{i}]", f"expected a LabeledSample, got {type(ex).__name__}")
        label = ex.label.strip() if isinstance(ex.label, str) else ex.label
        if label not in counts:
            raise InvalidInputError(f"examples[{i}].label", f"{ex.label!r} is not one of the task's classes {names}")
        counts[label] += 1
    empty = [n for n, c in counts.items() if c == 0]
    if empty:
        raise InvalidInputError("examples", f"no examples for class(es) {empty}")
    return names
