"""Writing a recording from pictures and sounds: the test and benchmark recordings of ``mcil watch``.

    write_recording("lesson.mp4", [Segment(photo, clip, seconds=4.0), ...], size=(1280, 720))

Each segment shows one picture (scaled to fill ``size``, nearest-neighbour: a 32-pixel photo stays
sharp-edged) for ``seconds`` while its sound plays (cut or padded with silence to the segment's
length). H.264 and AAC in MP4 by default; ``sound=False`` writes pictures only, ``pictures=False``
sound only (an ``.m4a``). Written with PyAV, the same library that reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    import av

from video.source import SAMPLE_RATE


@dataclass(frozen=True)
class Segment:
    image: np.ndarray | None  # (H, W, 3) uint8
    audio: np.ndarray | None  # float32 mono at SAMPLE_RATE
    seconds: float


def write_recording(path: str | Path, segments: Sequence[Segment], *, size: tuple[int, int] = (320, 240),
                    fps: int = 10, pictures: bool = True, sound: bool = True, crf: int = 18,
                    preset: str = "veryfast") -> Path:
    """Writes ``segments`` one after another to ``path``; returns it."""
    import av

    path = Path(path)
    width, height = size
    with av.open(str(path), mode="w") as out:
        video = audio = None
        if pictures:
            video = out.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": preset})
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if sound:
            audio = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        frame_index = 0
        sound_parts: list[np.ndarray] = []
        for segment in segments:
            frames = int(round(segment.seconds * fps))
            if video is not None:  # one picture a segment, converted once (the encoder refs, never writes, it)
                frame = av.VideoFrame.from_ndarray(_fill(segment.image, width, height), format="rgb24")
                frame = frame.reformat(format="yuv420p")
                frame.time_base = Fraction(1, fps)
                for _ in range(frames):
                    frame.pts = frame_index
                    out.mux(video.encode(frame))
                    frame_index += 1
            if audio is not None:
                n = int(round(segment.seconds * SAMPLE_RATE))
                clip = np.zeros(n, np.float32) if segment.audio is None else segment.audio[:n].astype(np.float32)
                sound_parts.append(np.pad(clip, (0, n - len(clip))))
        if audio is not None:
            _write_sound(out, audio, np.concatenate(sound_parts) if sound_parts else np.zeros(0, np.float32))
        if video is not None:
            out.mux(video.encode(None))
    return path


def _fill(image: np.ndarray | None, width: int, height: int) -> np.ndarray:
    """``image`` scaled (nearest neighbour, aspect kept) and centred on black; black if None."""
    canvas = np.zeros((height, width, 3), np.uint8)
    if image is None:
        return canvas
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    nh, nw = max(1, int(h * scale)), max(1, int(w * scale))
    rows = (np.arange(nh) * h // nh).clip(0, h - 1)
    cols = (np.arange(nw) * w // nw).clip(0, w - 1)
    top, left = (height - nh) // 2, (width - nw) // 2
    canvas[top:top + nh, left:left + nw] = image[rows][:, cols]
    return canvas


def _write_sound(out: "av.container.OutputContainer", stream: "av.AudioStream", samples: np.ndarray) -> None:
    import av

    chunk = 1024
    for start in range(0, len(samples), chunk):
        piece = samples[start:start + chunk]
        frame = av.AudioFrame.from_ndarray(piece[None, :], format="flt", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = start
        frame.time_base = Fraction(1, SAMPLE_RATE)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))
