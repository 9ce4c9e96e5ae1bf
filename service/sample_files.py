"""``mcil make-samples DIR``: a small synthetic sample set on disk, so the quick start needs no data.

Three classes that differ visually (colour and stripe angle) and aurally (pitch), from
:mod:`model.synthetic`: ``red``, ``green`` and ``blue``. Layout::

    DIR/red/images/000.png ... DIR/red/audio/000.wav ...   (paired by sorted name)
    DIR/test/red.png, DIR/test/red.wav, ...                 (one unseen pair per class)

Deterministic for a given seed. Images are PNG, sounds 16-bit PCM WAV at 16 kHz.
"""

from __future__ import annotations

from pathlib import Path

CLASSES = ("red", "green", "blue")
IMAGE_SIZE = 64


def write_sample_set(directory: Path, per_class: int = 30, seed: int = 0) -> dict[str, int]:
    """Write the set; returns ``{class: examples written}``."""
    import numpy as np
    import soundfile
    from PIL import Image

    from model.synthetic import SAMPLE_RATE, class_image, class_tone

    if per_class < 1:
        raise ValueError("per_class: must be >= 1")
    rng = np.random.default_rng(seed)
    test = directory / "test"
    test.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(CLASSES):
        images = directory / name / "images"
        audio = directory / name / "audio"
        images.mkdir(parents=True, exist_ok=True)
        audio.mkdir(parents=True, exist_ok=True)
        for j in range(per_class + 1):
            image = class_image(index, rng, IMAGE_SIZE)  # (H, W, 3) uint8
            wave = class_tone(index, rng, seconds=1.0)  # (N,) float32
            if j == per_class:
                image_path, audio_path = test / f"{name}.png", test / f"{name}.wav"
            else:
                image_path, audio_path = images / f"{j:03d}.png", audio / f"{j:03d}.wav"
            Image.fromarray(image).save(image_path)
            soundfile.write(audio_path, wave, SAMPLE_RATE, subtype="PCM_16")
    return {name: per_class for name in CLASSES}
