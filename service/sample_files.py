"""``mcil make-samples DIR``: a small synthetic sample set on disk, so the quick start needs no data.

Three classes that differ visually (colour and stripe angle) and aurally (pitch), from
:mod:`model.synthetic`: ``red``, ``green`` and ``blue``. Layout::

    DIR/red/images/000.png ... DIR/red/audio/000.wav ...   (paired by sorted name)
    DIR/test/red.png, DIR/test/red.wav, ...                 (one unseen pair per class)
    DIR/yellow/clips/000.mp4 ...                            (video clips of a fourth class)
    DIR/test/lesson.mp4                                     (a minute of scenes to ``mcil watch``)

Each clip (``mcil learn --class yellow --video ...``, 8 s) shows four pictures of yellow, 2 s each,
each while the class's 1 s tone plays and then silence. ``lesson.mp4`` is made the same way, in
square frames that the pictures fill as the PNGs do: 10 s scenes of red, yellow, blue, purple (a
class never taught), green, yellow (SCENES).

Deterministic for a given seed. Images are PNG, sounds 16-bit PCM WAV at 16 kHz.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

CLASSES = ("red", "green", "blue")
IMAGE_SIZE = 64
CLIP_CLASS = "yellow"  # pattern 3 of model.synthetic
SCENES = ("red", "yellow", "blue", "purple", "green", "yellow")
SCENE_SECONDS = 10.0
_PATTERN = {"red": 0, "green": 1, "blue": 2, "yellow": 3, "purple": 4}
FRAME = (256, 256)  # square, as the PNGs are: the picture fills the frame


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
    write_clips(directory, clips=max(2, per_class // 5), rng=rng)
    return {name: per_class for name in CLASSES}


def write_clips(directory: Path, clips: int, rng: "np.random.Generator") -> None:
    """``DIR/yellow/clips/*.mp4`` and ``DIR/test/lesson.mp4`` (the module's docstring)."""
    from model.synthetic import class_image, class_tone
    from video.compose import Segment, write_recording

    def scene(name: str, seconds: float, pictures: int) -> list[Segment]:
        """``pictures`` pictures of the class, each shown while its 1 s tone plays, then silence."""
        index = _PATTERN[name]
        return [Segment(class_image(index, rng, IMAGE_SIZE), class_tone(index, rng, seconds=1.0),
                        seconds / pictures) for _ in range(pictures)]

    folder = directory / CLIP_CLASS / "clips"
    folder.mkdir(parents=True, exist_ok=True)
    for j in range(clips):
        write_recording(folder / f"{j:03d}.mp4", scene(CLIP_CLASS, 8.0, 4), size=FRAME)
    lesson = [part for name in SCENES for part in scene(name, SCENE_SECONDS, 5)]
    write_recording(directory / "test" / "lesson.mp4", lesson, size=FRAME)
