"""A small synthetic audio-visual data set, for tests and the quick start (no downloads needed).

Each class has a colour-and-stripe image pattern and a tone at its own pitch; every sample adds
noise, a random shift and a random loudness, so classes are learnable but not trivially identical.
Deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np

from model.samples import LabeledSample

SAMPLE_RATE = 16000

_COLOURS = [(220, 40, 40), (40, 200, 60), (40, 80, 230), (230, 200, 30), (200, 40, 200),
            (30, 200, 200), (250, 130, 20), (120, 120, 120), (140, 70, 20), (250, 250, 250)]


def class_image(class_index: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """``(size, size, 3)`` uint8: a class colour with stripes at a class-specific angle and period."""
    colour = np.array(_COLOURS[class_index % len(_COLOURS)], dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = np.pi * (class_index % 5) / 5
    period = 4 + 2 * (class_index % 3)
    phase = rng.uniform(0, 2 * np.pi)
    stripes = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period + phase)
    image = colour[None, None, :] * (0.4 + 0.6 * stripes[:, :, None])
    image += rng.normal(0, 20, image.shape)
    pixels: np.ndarray = np.clip(image, 0, 255).astype(np.uint8)
    return pixels


def class_tone(class_index: int, rng: np.random.Generator, seconds: float = 0.5,
               sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32: a tone (and its octave) at a class-specific pitch, with noise and jitter."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 220.0 * 2 ** (class_index * 5 / 12) * rng.uniform(0.98, 1.02)
    wave = np.sin(2 * np.pi * f0 * t) + 0.5 * np.sin(4 * np.pi * f0 * t)
    wave = wave * rng.uniform(0.3, 0.8) + rng.normal(0, 0.05, t.shape)
    return np.clip(wave / 2, -1, 1).astype(np.float32)


def make_dataset(class_names: list[str], per_class: int, seed: int = 0,
                 image_size: int = 32, first_index: int = 0) -> list[LabeledSample]:
    """``per_class`` image+audio pairs for each class; class i uses pattern ``first_index + i``."""
    rng = np.random.default_rng(seed)
    out = []
    for i, name in enumerate(class_names):
        for _ in range(per_class):
            out.append(LabeledSample(image=class_image(first_index + i, rng, image_size),
                                     audio=class_tone(first_index + i, rng), sample_rate=SAMPLE_RATE, label=name))
    order = rng.permutation(len(out))
    return [out[j] for j in order]
