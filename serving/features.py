"""A pair's features from raw pictures and sounds, without PyTorch: inputs prepared, then the base's graphs.

    features = BaseFeatures(base)                       # base: serving.base.BaseGraphs holding its audio
    x = features.of(samples)                            # {"visual": (B, Dv), "audio": (B, Da)}, NaN rows
    answers = head.answer(x, top_k=5)                   # serving/head.py

What ``model.batch.encode_samples`` and the learner's frozen encoders compute, in NumPy and ONNX
Runtime: every sample is checked first (an error names ``samples[i].image`` or ``samples[i].audio``
and nothing runs), pictures are resized and normalised and sounds resampled and fitted to the clip
(``serving/inputs.py``) as ``base.json`` says, a recording sent with several pictures is encoded
once, and the graphs run ``CHUNK`` samples at a time. A row of NaN stands for an input a sample does
not have (``ServedHead.judge`` reads it so).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from serving.base import CHUNK, BaseGraphs
from serving.errors import BaseGraphsError
from serving.inputs import RawSample, check_samples, prepare_images, prepare_waveforms, recording_key


class BaseFeatures:
    """Raw samples -> the base's features (module docstring)."""

    def __init__(self, base: BaseGraphs) -> None:
        if not base.has_audio:
            raise BaseGraphsError("base.audio", "this base does not hold its audio encoder (only lite's is held)")
        m = base.meta
        self.base = base
        self.size = base.image_size
        self.mean = tuple(float(v) for v in m["image_mean"])
        self.std = tuple(float(v) for v in m["image_std"])
        self.sample_rate = int(m["sample_rate"])
        self.clip_samples = int(m["clip_samples"])
        self.audio_dim = int(m["audio_dim"])

    def of(self, samples: Sequence[RawSample], field: str = "samples") -> dict[str, np.ndarray]:
        """``{"visual": (B, Dv), "audio": (B, Da)}`` float32, NaN rows where a sample lacks the input."""
        check_samples(samples, field)
        n = len(samples)
        visual = np.full((n, self.base.feature_dim), np.nan, dtype=np.float32)
        audio = np.full((n, self.audio_dim), np.nan, dtype=np.float32)
        rows = [i for i, s in enumerate(samples) if s.image is not None]
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start:start + CHUNK]
            pictures = prepare_images([samples[i].image for i in chunk], self.size, self.mean, self.std)  # type: ignore[misc]
            visual[chunk] = self.base.image_features(pictures)
        first: dict[tuple[bytes, int], int] = {}  # a recording sent with several pictures is encoded once
        same_as = {i: first.setdefault(recording_key(samples[i]), i) for i, s in enumerate(samples) if s.audio is not None}
        distinct = sorted(set(same_as.values()))
        for start in range(0, len(distinct), CHUNK):
            chunk = distinct[start:start + CHUNK]
            waves = prepare_waveforms([samples[i].audio for i in chunk],  # type: ignore[misc]
                                      [samples[i].sample_rate for i in chunk],  # type: ignore[misc]
                                      self.sample_rate, self.clip_samples)
            audio[chunk] = self.base.audio_features(waves)
        for i, j in same_as.items():
            audio[i] = audio[j]
        return {"visual": visual, "audio": audio}

