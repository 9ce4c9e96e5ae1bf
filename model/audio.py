"""Audio preparation: decode (soundfile), mix to mono, resample (torchaudio), fit to a clip length.

The encoders take fixed-length mono clips at their own sample rate (AudioCLIP: 44.1 kHz, 5 s).
Shorter recordings are zero-padded at the end, longer ones are centre-cropped.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import soundfile
import torch
import torchaudio.functional as AF

from model.errors import InvalidInputError
from serving.inputs import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, check_waveform  # noqa: F401  (this module's names too)


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


def fit_length(wave: torch.Tensor, n: int) -> torch.Tensor:
    """Zero-pad at the end or centre-crop ``(S,)`` to exactly ``n`` samples."""
    if wave.shape[-1] >= n:
        start = (wave.shape[-1] - n) // 2
        return wave[..., start : start + n]
    return torch.nn.functional.pad(wave, (0, n - wave.shape[-1]))


def prepare_waveforms(
    waves: Sequence[np.ndarray], sample_rates: Sequence[int], target_rate: int, clip_samples: int
) -> torch.Tensor:
    """Mono waveforms at any supported rate -> ``(B, clip_samples)`` at ``target_rate``."""
    if len(waves) == 0:
        raise InvalidInputError("audio", "no waveforms given")
    if len(waves) != len(sample_rates):
        raise InvalidInputError("sample_rates", f"{len(sample_rates)} rates for {len(waves)} waveforms")
    out = []
    for i, (wave, rate) in enumerate(zip(waves, sample_rates)):
        check_waveform(wave, rate, field=f"audio[{i}]")
        x = torch.tensor(wave, dtype=torch.float32)
        if rate != target_rate:
            x = AF.resample(x, int(rate), target_rate)
        out.append(fit_length(x, clip_samples))
    return torch.stack(out)  # (B, clip_samples)
