"""Labelled clips -> examples to learn from: ``mcil learn --class clapping --video a.mp4 b.mp4``.

Each clip gives ``per_clip`` examples at evenly spaced moments (the middles of ``per_clip`` equal
parts of the clip): the picture at that moment and the sound window around it, as ``mcil watch``
takes them, so a class is taught from what the daemon will later be shown. A clip without a sound
track gives pictures only, a sound file gives sounds only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from video.source import SourceError, Step, open_source

DEFAULT_PER_CLIP = 4
MAX_CLIP_SECONDS = 600.0
"""A labelled clip longer than this is refused: teaching takes short clips of one class."""


@dataclass(frozen=True)
class ClipExample:
    source: str  # "clip.mp4 at 1.2 s": named in the daemon's errors
    image: np.ndarray | None
    audio: np.ndarray | None


def examples_from_clip(path: str, per_clip: int = DEFAULT_PER_CLIP, window: float = 5.0) -> list[ClipExample]:
    """``per_clip`` examples of the clip at ``path``. Raises SourceError (naming the clip)."""
    if per_clip < 1:
        raise ValueError(f"--per-clip: at least 1, got {per_clip}")
    source = open_source(path, max_duration=MAX_CLIP_SECONDS)
    try:
        if source.info.live:
            raise SourceError(f"{path}: a live source; teach from recorded clips")
        duration = source.info.duration
        if duration is None:  # the container does not say: read it once to find out, then again
            for _ in source.steps(every=1.0, window=window):
                pass
            duration = source.end_time
            source.close()
            source = open_source(path, max_duration=MAX_CLIP_SECONDS)
        if not duration or duration <= 0:
            raise SourceError(f"{path}: an empty clip")
        every = duration / per_clip
        steps: list[Step] = list(source.steps(every=every, window=window, first=every / 2))
    finally:
        source.close()
    examples = [ClipExample(f"{path} at {s.time:.1f} s", s.image, s.audio)
                for s in steps[:per_clip] if s.image is not None or s.audio is not None]
    if not examples:
        raise SourceError(f"{path}: no picture or sound could be taken from it")
    return examples
