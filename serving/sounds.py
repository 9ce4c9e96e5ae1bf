"""YAMNet (the ``lite`` preset's sound-event encoder) in NumPy and ONNX Runtime.

    sounds = SoundEvents(body_session, window, mel_weights)
    events = sounds.embed(waves)          # (B, S) 16 kHz in [-1, 1] -> (B, 1024), unit-length rows

The front end (log-mel patches) runs in NumPy with the Hann window and mel matrix the PyTorch
module uses (``model/encoders/yamnet.py`` says what it computes and how it was checked against
TensorFlow); the network body (MobileNetV1 over each ``(96, 64)`` patch) runs as the ONNX graph
``export/base.py`` exports from that module. As ``model/encoders/lite_audio.py`` reads it, only the
recording counts, not the zero padding that fits a short one to the clip length: each clip's patches
are computed up to its last non-zero sample, every clip's patches go through the body together, and
each clip's embedding is the mean of its own patches, then made unit-length.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from serving.speech import signal_ends

WINDOW = 400  # 25 ms at 16 kHz
HOP = 160  # 10 ms
FFT_LENGTH = 512
LOG_OFFSET = 0.001
PATCH_FRAMES = 96  # 0.96 s
PATCH_HOP_FRAMES = 48  # 0.48 s
MIN_SAMPLES = WINDOW + (PATCH_FRAMES - 1) * HOP  # 15,600: one patch
PATCH_HOP_SAMPLES = PATCH_HOP_FRAMES * HOP  # 7,680
EMBEDDING_DIM = 1024
PATCHES_PER_RUN = 32  # patches per ONNX Runtime call: bounds its memory arena


def n_patches(samples: int) -> int:
    """Patches YAMNet makes of ``samples`` samples (at least one)."""
    return 1 + math.ceil(max(0, samples - MIN_SAMPLES) / PATCH_HOP_SAMPLES)


def log_mel_patches(wave: np.ndarray, window: np.ndarray, mel_weights: np.ndarray) -> np.ndarray:
    """One clip ``(S,)`` -> ``(P, 96, 64)`` float32 log-mel patches (zero-padded to whole patches)."""
    samples = len(wave)
    padded = np.pad(wave.astype(np.float32), (0, MIN_SAMPLES + (n_patches(samples) - 1) * PATCH_HOP_SAMPLES - samples))
    count = (len(padded) - WINDOW) // HOP + 1
    frames = np.lib.stride_tricks.as_strided(padded, shape=(count, WINDOW),
                                             strides=(padded.strides[0] * HOP, padded.strides[0])) * window
    magnitude = np.abs(np.fft.rfft(frames, n=FFT_LENGTH)).astype(np.float32)  # (T, 257)
    log_mel = np.log(magnitude @ mel_weights + np.float32(LOG_OFFSET))  # (T, 64)
    starts = range(0, count - PATCH_FRAMES + 1, PATCH_HOP_FRAMES)
    return np.stack([log_mel[s:s + PATCH_FRAMES] for s in starts]).astype(np.float32)


class SoundEvents:
    """The body's ONNX Runtime session and the front end's constants (module docstring)."""

    def __init__(self, body: Any, window: np.ndarray, mel_weights: np.ndarray) -> None:
        self._body = body
        self._input = body.get_inputs()[0].name
        self.window = np.asarray(window, dtype=np.float32)
        self.mel_weights = np.asarray(mel_weights, dtype=np.float32)

    def embed(self, waves: np.ndarray) -> np.ndarray:
        """``(B, S)`` float32 waveforms -> ``(B, 1024)`` float32, unit-length rows (module docstring)."""
        ends = signal_ends(waves)
        patches = [log_mel_patches(wave[:max(int(end), 1)], self.window, self.mel_weights)
                   for wave, end in zip(waves, ends)]
        flat = np.concatenate(patches)
        embedded = np.concatenate([self._body.run(None, {self._input: flat[i:i + PATCHES_PER_RUN]})[0]
                                   for i in range(0, len(flat), PATCHES_PER_RUN)])
        bounds = np.cumsum([len(p) for p in patches])[:-1]
        means = np.stack([e.mean(0, dtype=np.float64) for e in np.split(embedded, bounds)])
        norms = np.maximum(np.sqrt((means * means).sum(axis=1, keepdims=True)), 1e-12)
        out: np.ndarray = (means / norms).astype(np.float32)
        return out
