"""Audio preparation: decode (soundfile), mix to mono, resample, fit to a clip length.

The encoders take fixed-length mono clips at their own sample rate (AudioCLIP: 44.1 kHz, 5 s).
Shorter recordings are zero-padded at the end, longer ones are centre-cropped.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import soundfile
import torch

from model.errors import InvalidInputError
from serving.inputs import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, check_waveform  # noqa: F401  (this module's names too)
from serving.inputs import prepare_waveforms as serve_waveforms


def decode_audio(data: bytes, field: str = "audio") -> tuple[np.ndarray, int]:
    """WAV/FLAC/OGG bytes -> (mono float32 waveform, sample rate)."""
    try:
        wave, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as exc:
        raise InvalidInputError(field, f"cannot decode audio: {exc}") from None
    return wave.mean(axis=1), int(rate)


def load_audio_file(path: str) -> tuple[np.ndarray, int]:
    wave, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return wave.mean(axis=1), int(rate)


def prepare_waveforms(
    waves: Sequence[np.ndarray], sample_rates: Sequence[int], target_rate: int, clip_samples: int
) -> torch.Tensor:
    """Mono waveforms at any supported rate -> ``(B, clip_samples)`` at ``target_rate``: resampled as
    torchaudio resamples (windowed sinc), then zero-padded at the end or centre-cropped. Computed by
    ``serving.inputs.prepare_waveforms``, so that the learner and a serving process without PyTorch
    prepare a sound bit for bit alike."""
    return torch.from_numpy(serve_waveforms(waves, sample_rates, target_rate, clip_samples))
