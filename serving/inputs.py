"""Input preparation in NumPy: what ``model/images.py`` and ``model/audio.py`` compute with PyTorch.

    images = prepare_images(pictures, size=160, mean=..., std=...)   # (B, 3, size, size) float32
    waves = prepare_waveforms(waves, rates, target_rate=16000, clip_samples=80000)

Pictures are resized as ``torch.nn.functional.interpolate(mode="bilinear", antialias=True,
align_corners=False)`` resizes them (a triangle filter stretched by the scale when shrinking, PIL's
resampling; rows first, then columns), then normalised. Sounds are resampled as
``torchaudio.functional.resample`` does by default (windowed sinc, Hann window, 6 zero crossings,
roll-off 0.99; the kernel computed and applied in float32), then zero-padded at the end or
centre-cropped to the clip length. The two sides agree to float32 rounding (tests/serving/test_inputs.py).

Errors name the field at fault (``model.errors.InvalidInputError``, the learner's own: the model's
side validates with these functions too); nothing here imports PyTorch.
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache
from typing import Protocol, Sequence

import numpy as np

from model.errors import InvalidInputError

InputError = InvalidInputError
"""An input the model cannot take (``field`` names it)."""
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000
MAX_RESAMPLING_PHASES = 1_000_000
"""Rates whose ratio to the model's, in lowest terms ``orig / new``, has ``orig * new`` above this are
refused: the resampling kernel is ``new`` x (``orig`` + taps) numbers (44.1 kHz to 16 kHz: 441 / 160;
a prime rate such as 191,999 Hz would ask for gigabytes)."""


class RawSample(Protocol):
    """A decoded picture and/or sound (``model.samples.Sample`` is one)."""

    @property
    def image(self) -> np.ndarray | None: ...

    @property
    def audio(self) -> np.ndarray | None: ...

    @property
    def sample_rate(self) -> int | None: ...


def recording_key(sample: RawSample) -> tuple[bytes, int]:
    """What makes two samples' sounds the same recording: their samples (bit for bit) and rate. A
    recording sent with several pictures (a clip's frames share its sound) is encoded once."""
    wave = np.ascontiguousarray(sample.audio)
    return hashlib.sha256(wave.tobytes() + str(wave.dtype).encode()).digest(), int(sample.sample_rate or 0)


def check_samples(samples: Sequence[RawSample], field: str = "samples") -> None:
    """Raises :class:`InputError` naming the first sample the model cannot take."""
    if len(samples) == 0:
        raise InputError(field, "no samples given")
    for i, s in enumerate(samples):
        if s.image is None and s.audio is None:
            raise InputError(f"{field}[{i}]", "has neither an image nor audio")
        if s.image is not None:
            picture_array(s.image, field=f"{field}[{i}].image")
        if s.audio is not None:
            if s.sample_rate is None:
                raise InputError(f"{field}[{i}].sample_rate", "required when audio is given")
            check_waveform(s.audio, s.sample_rate, field=f"{field}[{i}].audio")


# -- pictures -------------------------------------------------------------------------------------
def picture_array(image: np.ndarray, field: str = "image") -> np.ndarray:
    """One decoded picture (``(H, W)``, ``(H, W, 1|3|4)``, uint8 or float in [0, 1]) -> ``(3, H, W)``
    float32 in [0, 1] (alpha dropped, grey repeated)."""
    if not isinstance(image, np.ndarray):
        raise InputError(field, f"expected a numpy array, got {type(image).__name__}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise InputError(field, f"expected shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(field, f"empty image of shape {image.shape}")
    if image.dtype == np.uint8:
        x = image.astype(np.float32) / np.float32(255.0)
    elif np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise InputError(field, "contains NaN or infinite values")
        if image.min() < 0.0 or image.max() > 1.0:
            raise InputError(field, "floating-point pixels must lie in [0, 1]")
        x = image.astype(np.float32)
    else:
        raise InputError(field, f"unsupported dtype {image.dtype}; use uint8 or float")
    x = x[:, :, :3] if x.shape[2] == 4 else x
    x = np.repeat(x, 3, axis=2) if x.shape[2] == 1 else x
    return np.ascontiguousarray(x.transpose(2, 0, 1))


@lru_cache(maxsize=64)
def _resize_weights(size_in: int, size_out: int) -> np.ndarray:
    """``(size_out, size_in)`` float32: each output pixel's weights over the input pixels (PyTorch's
    antialiased bilinear: PIL's triangle filter, support stretched by the scale when shrinking)."""
    f32 = np.float32
    scale = f32(size_in / size_out)
    support = scale if scale >= 1.0 else f32(1.0)
    inverse = f32(1.0) / scale if scale >= 1.0 else f32(1.0)
    out = np.zeros((size_out, size_in), dtype=f32)
    for i in range(size_out):
        center = scale * (f32(i) + f32(0.5))
        low = max(int(center - support + f32(0.5)), 0)
        high = min(int(center + support + f32(0.5)), size_in)
        j = np.arange(low, high, dtype=f32)
        w = np.maximum(f32(0.0), f32(1.0) - np.abs((j - center + f32(0.5)) * inverse))
        total = w.sum(dtype=f32)
        out[i, low:high] = w / total if total != 0 else w
    return out


def resize(picture: np.ndarray, size: int) -> np.ndarray:
    """``(3, H, W)`` -> ``(3, size, size)``, antialiased bilinear (module docstring)."""
    _, h, w = picture.shape
    if (h, w) == (size, size):
        return picture
    across = picture @ _resize_weights(w, size).T  # (3, H, size): along each row first
    out: np.ndarray = np.matmul(_resize_weights(h, size), across)  # (3, size, size): then down each column
    return out.astype(np.float32, copy=False)


def prepare_images(images: Sequence[np.ndarray], size: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Decoded pictures -> ``(B, 3, size, size)`` float32, resized and normalised."""
    if len(images) == 0:
        raise InputError("images", "no images given")
    batch = np.stack([resize(picture_array(image, field=f"images[{i}]"), size) for i, image in enumerate(images)])
    m = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    out: np.ndarray = (batch - m) / s
    return out


# -- sounds ---------------------------------------------------------------------------------------
def check_waveform(wave: np.ndarray, sample_rate: int, field: str = "audio") -> None:
    if not isinstance(wave, np.ndarray):
        raise InputError(field, f"expected a numpy array, got {type(wave).__name__}")
    if wave.ndim != 1:
        raise InputError(field, f"expected a mono waveform of shape (samples,), got {wave.shape}")
    if wave.size == 0:
        raise InputError(field, "empty waveform")
    if not np.issubdtype(wave.dtype, np.floating):
        raise InputError(field, f"expected float samples in [-1, 1], got dtype {wave.dtype}")
    if not np.isfinite(wave).all():
        raise InputError(field, "contains NaN or infinite values")
    if not isinstance(sample_rate, (int, np.integer)) or not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise InputError(f"{field}.sample_rate",
                         f"must be an integer in [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz, got {sample_rate}")


@lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int, zeros: int = 6, rolloff: float = 0.99) -> tuple[np.ndarray, int]:
    """``((new, taps) float32 kernels, width)`` for rates already divided by their gcd: the kernel
    torchaudio's ``sinc_interp_hann`` resampling computes for float32 sound, step by step in float32."""
    f32 = np.float32
    base = min(orig, new) * rolloff
    width = math.ceil(zeros * orig / base)
    idx = np.arange(-width, width + orig, dtype=f32)[None] / f32(orig)
    t = np.arange(0, -new, -1, dtype=f32)[:, None] / f32(new) + idx
    t = np.clip(t * f32(base), -zeros, zeros).astype(f32)
    window = np.cos(t * f32(math.pi) / f32(zeros) / f32(2)) ** 2
    t = t * f32(math.pi)
    with np.errstate(invalid="ignore", divide="ignore"):
        kernels = np.where(t == 0, f32(1.0), np.sin(t) / t)
    kernels = kernels * (window * f32(base / orig))
    return kernels.astype(f32), width


def resample(wave: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """``(S,)`` float32 at ``orig_rate`` -> ``(ceil(S * new / orig),)`` at ``new_rate`` (module docstring)."""
    if orig_rate == new_rate:
        return wave.astype(np.float32, copy=False)
    g = math.gcd(int(orig_rate), int(new_rate))
    orig, new = int(orig_rate) // g, int(new_rate) // g
    kernels, width = _sinc_kernel(orig, new)
    padded = np.pad(wave.astype(np.float32), (width, width + orig))
    taps = kernels.shape[-1]
    frames = (len(padded) - taps) // orig + 1
    windows = np.lib.stride_tricks.as_strided(padded, shape=(frames, taps),
                                              strides=(padded.strides[0] * orig, padded.strides[0]))
    out = (windows @ kernels.T).reshape(-1)  # (frames, new): each frame's new samples, in order
    target = math.ceil(new * len(wave) / orig)
    result: np.ndarray = out[:target].astype(np.float32, copy=False)
    return result


def fit_length(wave: np.ndarray, n: int) -> np.ndarray:
    """Zero-pad at the end or centre-crop ``(S,)`` to exactly ``n`` samples."""
    if len(wave) >= n:
        start = (len(wave) - n) // 2
        return wave[start:start + n]
    return np.pad(wave, (0, n - len(wave)))


def prepare_waveforms(waves: Sequence[np.ndarray], sample_rates: Sequence[int], target_rate: int,
                      clip_samples: int) -> np.ndarray:
    """Mono waveforms at any supported rate -> ``(B, clip_samples)`` float32 at ``target_rate``."""
    if len(waves) == 0:
        raise InputError("audio", "no waveforms given")
    if len(waves) != len(sample_rates):
        raise InputError("sample_rates", f"{len(sample_rates)} rates for {len(waves)} waveforms")
    out = []
    for i, (wave, rate) in enumerate(zip(waves, sample_rates)):
        check_waveform(wave, rate, field=f"audio[{i}]")
        g = math.gcd(int(rate), int(target_rate))
        if (int(rate) // g) * (int(target_rate) // g) > MAX_RESAMPLING_PHASES:
            raise InputError(f"audio[{i}].sample_rate", f"{rate} Hz cannot be resampled to {target_rate} Hz here "
                             "(their ratio in lowest terms is too fine); use a common rate (8, 16, 22.05, 32, "
                             "44.1 or 48 kHz)")
        out.append(fit_length(resample(np.asarray(wave, dtype=np.float32), int(rate), target_rate), clip_samples))
    return np.stack(out)
