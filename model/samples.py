"""What callers hand to a learner: decoded samples, labelled or not, and what they get back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from model.errors import InvalidInputError

PATHS = ("av", "visual", "audio")
"""Modality paths: both inputs through the fusion module, image only, audio only."""


@dataclass(frozen=True)
class Sample:
    """One observation. Either modality may be missing, not both.

    ``image``: decoded ``(H, W)`` or ``(H, W, 1|3|4)`` array, uint8 or float in [0, 1].
    ``audio``: mono float waveform in [-1, 1]; ``sample_rate`` (Hz) is then required.
    """

    image: np.ndarray | None = None
    audio: np.ndarray | None = None
    sample_rate: int | None = None

    @property
    def path(self) -> str:
        """The modality path this sample can take: ``av``, ``visual`` or ``audio``."""
        if self.image is not None and self.audio is not None:
            return "av"
        return "visual" if self.image is not None else "audio"

    def only(self, path: str) -> "Sample":
        """This sample restricted to one modality path (``visual`` drops audio, ``audio`` drops image)."""
        if path == "visual":
            return Sample(image=self.image)
        if path == "audio":
            return Sample(audio=self.audio, sample_rate=self.sample_rate)
        return Sample(image=self.image, audio=self.audio, sample_rate=self.sample_rate)


@dataclass(frozen=True)
class LabeledSample(Sample):
    """A sample with its class name."""

    label: str = ""


@dataclass(frozen=True)
class Prediction:
    """Top-k classes, best first, with their scores (see ``Learner.predict``).

    ``unknown``: the learner's head judged the sample unlike every class it has learned (its best
    score lies below that class's calibrated threshold; model/heads.py). The classes are still ranked.
    """

    classes: tuple[str, ...]
    scores: tuple[float, ...]
    path: str
    unknown: bool = False


def check_top_k(top_k: object) -> int:
    """``top_k`` if it is a positive integer; else InvalidInputError naming ``top_k``."""
    if not isinstance(top_k, int) or top_k < 1:
        raise InvalidInputError("top_k", f"must be a positive integer, got {top_k!r}")
    return top_k


def rank(scores: torch.Tensor, paths: torch.Tensor, unknown: torch.Tensor | None, classes: Sequence[str],
         top_k: int, normalise: bool) -> list[Prediction]:
    """One :class:`Prediction` per row of ``scores (B, C)``: the ``top_k`` classes, best first.

    ``normalise``: a softmax over every class (prototype scores); otherwise the scores are a statistics
    head's own, clamped to [0, 1] (model/heads.py). ``paths``: ``(B,)`` codes into :data:`PATHS`."""
    probs = scores.softmax(dim=-1) if normalise else scores.clamp(0.0, 1.0)
    values, index = probs.topk(min(top_k, probs.shape[1]), dim=-1)
    flags = unknown if unknown is not None else torch.zeros(len(probs), dtype=torch.bool)
    return [Prediction(tuple(classes[j] for j in idx.tolist()), tuple(float(x) for x in val.tolist()),
                       PATHS[int(p)], bool(u))
            for idx, val, p, u in zip(index, values, paths, flags)]
