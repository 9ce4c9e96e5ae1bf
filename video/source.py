"""A recording, a camera or a stream, decoded with PyAV into *steps*: a picture and the sound around it.

    source = open_source("lesson.mp4")             # or "rtsp://camera/stream", "/dev/video0"
    for step in source.steps(every=1.0, window=5.0):
        step.time, step.image, step.audio          # seconds; (H, W, 3) uint8 or None; float32 16 kHz or None

A step is taken every ``every`` seconds of the source's own clock: the first picture at or after the
step's time, and ``window`` seconds of sound around it (centred on the step, moved inside the
recording at its start and end), mixed to mono and resampled to 16 kHz. Pictures are scaled down
as they are decoded (``max_side``), so an 8K source costs its decoding, not 8K pictures in memory.
A source without a sound track gives pictures only, one without pictures sound only.

Everything that can go wrong with a source is a :class:`SourceError` with a message for the user: a
file that is not a video, a stream that cannot be opened, a source longer than ``max_duration``.
A live stream that stops is not an error: :attr:`MediaSource.stopped` says why it ended.
"""

from __future__ import annotations

import collections
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

if TYPE_CHECKING:
    import av

SAMPLE_RATE = 16_000
"""Sound is sent to the daemon at this rate (the daemon resamples to what its encoder reads)."""

MAX_SIDE = 320
"""Pictures are scaled down to at most this many pixels on their longer side (the encoders read 32-224)."""

LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")

_PICTURE_FORMATS = re.compile(r"(image2|_pipe)$")


class SourceError(Exception):
    """A source that cannot be used, said for the user (no traceback)."""


@dataclass(frozen=True)
class Step:
    """One moment of the source: its time (seconds from the start), picture and sound window."""

    time: float
    image: np.ndarray | None  # (H, W, 3) uint8
    audio: np.ndarray | None  # (S,) float32 mono at SAMPLE_RATE


@dataclass(frozen=True)
class SourceInfo:
    name: str
    live: bool
    has_pictures: bool
    has_sound: bool
    duration: float | None  # seconds, where the container says
    width: int  # of the decoded pictures before scaling; 0 without pictures
    height: int


def is_live(source: str) -> bool:
    """A network stream or a local camera: read at its own pace, never faster."""
    scheme = source.split("://", 1)[0].lower() if "://" in source else ""
    return scheme in LIVE_SCHEMES or source.startswith("/dev/video")


def open_source(source: str, *, max_side: int = MAX_SIDE, max_duration: float | None = None,
                timeout: float = 10.0) -> "MediaSource":
    """Opens ``source`` (a file, ``/dev/videoN`` or a stream URL). Raises SourceError."""
    import av

    live = is_live(source)
    options: dict[str, object] = {}
    if source.startswith("/dev/video"):
        options["format"] = "v4l2"
    elif not live:
        path = Path(source)
        if not path.exists():
            raise SourceError(f"{source}: no such file")
        if path.is_dir():
            raise SourceError(f"{source}: a directory, not a video")
    try:
        container = av.open(source, mode="r", timeout=(timeout, timeout), **options)  # type: ignore[call-overload]
    except av.FFmpegError as exc:
        what = "a video or sound file that can be read" if not live else "a stream that can be opened"
        raise SourceError(f"{source}: not {what} ({_reason(exc)})") from None
    try:
        return MediaSource(source, container, live=live, max_side=max_side, max_duration=max_duration)
    except BaseException:
        container.close()
        raise


class MediaSource:
    """An open source; iterate :meth:`steps` once, then :meth:`close` (or use ``with``)."""

    def __init__(self, name: str, container: "av.container.InputContainer", *, live: bool, max_side: int,
                 max_duration: float | None) -> None:
        import av

        if _PICTURE_FORMATS.search(container.format.name or ""):
            raise SourceError(f"{name}: a still picture ({container.format.name}), not a video; "
                              "classify it with `mcil classify`")
        self._container = container
        # A sound file's cover art is a one-picture "video" stream: it is not pictures to watch.
        moving = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
        self._video = moving[0] if moving else None
        self._audio = container.streams.audio[0] if container.streams.audio else None
        if self._video is None and self._audio is None:
            raise SourceError(f"{name}: neither pictures nor sound in it")
        duration = container.duration / 1_000_000 if container.duration else None
        live = live and not duration  # a recording served over HTTP has a length: it is read as a file
        if max_duration is not None and duration is not None and duration > max_duration:
            raise SourceError(f"{name}: lasts {duration:.1f} s, more than --max-duration {max_duration:g} s")
        ctx = self._video.codec_context if self._video is not None else None
        if ctx is not None:
            ctx.thread_type = "AUTO"  # decode with every core: 8K is slow otherwise
        self.info = SourceInfo(name=name, live=live, has_pictures=self._video is not None,
                               has_sound=self._audio is not None, duration=duration,
                               width=ctx.width if ctx else 0, height=ctx.height if ctx else 0)
        self.max_side = max_side
        self.max_duration = max_duration
        self.stopped: str | None = None  # why a live source ended early, if it did
        self.end_time = 0.0  # seconds of the source read so far
        self.leave_open = False  # set when a reader thread may still be inside a read: closing would crash it
        self._untimed = 0  # frames without a timestamp (a raw .h264 stream has none)
        # The latest picture read from the container, decoded or not: a decoder holds a few frames
        # back (one per thread), so the pictures have ended only when the container stops sending them.
        self._picture_sent = -math.inf

    def __enter__(self) -> "MediaSource":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self.leave_open:
            self._container.close()

    def steps(self, every: float = 1.0, window: float = 5.0, first: float = 0.0) -> Iterator[Step]:
        """Steps at ``first``, ``first + every``, ...; each with ``window`` seconds of sound.

        A step waits for the sound around it, but not for ever: when the sound lags the pictures by
        more than two windows (a track that ended, or never sends), steps go on with what sound there
        is, or none. When the pictures stop and the sound goes on, steps go on with sound alone.
        A live source longer than ``max_duration`` ends at it (``stopped`` says so); a file's length
        was checked on opening when the container knows it, else it is checked here."""
        if every <= 0 or window <= 0:
            raise ValueError("every and window must be positive")
        sound = _SoundBuffer(window) if self._audio is not None else None
        pending: collections.deque[tuple[float, np.ndarray | None]] = collections.deque()  # waiting for sound
        patience = 2 * window + every
        yielded = False
        next_time = first
        now = 0.0
        for time, payload in self._decoded():
            now = max(now, time)
            self.end_time = now
            if self.max_duration is not None and time > self.max_duration:
                if not self.info.live:
                    raise SourceError(f"{self.info.name}: longer than --max-duration {self.max_duration:g} s")
                self.stopped = f"reached --max-duration {self.max_duration:g} s"
                break
            if isinstance(payload, np.ndarray):  # sound
                assert sound is not None
                sound.add(time, payload)
                if self._video is None or sound.end - max(self._picture_sent, first) > patience:  # no pictures now
                    while sound.end >= next_time + every / 2:  # half a step heard, at least
                        pending.append((next_time, None))
                        next_time += every
            else:  # a picture
                if time - next_time > 10 * every:  # a jump forward (a live stream's discontinuity)
                    next_time = first + math.floor((time - first) / every) * every
                picture = None
                while time + 1e-6 >= next_time:
                    picture = self._picture(payload) if picture is None else picture
                    pending.append((next_time, picture))
                    next_time += every
            while pending and (sound is None or sound.covers(pending[0][0]) or now - pending[0][0] > patience):
                t, image = pending.popleft()
                audio = sound.window(t) if sound is not None else None
                if image is not None or audio is not None:
                    yield Step(t, image, audio)
                    yielded = True
            if sound is not None:
                sound.forget_before(pending[0][0] if pending else next_time)
        if self.info.live and self.stopped is None:
            self.stopped = f"the stream ended at {self.end_time:.1f} s"
        for t, image in pending:  # the end: the last steps take what sound there is
            audio = sound.window(t, at_end=True) if sound is not None and t <= sound.end else None
            if image is not None or audio is not None:
                yield Step(t, image, audio)
                yielded = True
        if not yielded and self._untimed:
            raise SourceError(f"{self.info.name}: its frames carry no timestamps (a raw stream?); "
                              "put it in a container first (mp4, mkv, ts)")

    def _decoded(self) -> Iterator[tuple[float, "np.ndarray | av.VideoFrame"]]:
        """(seconds from the start, a picture frame or a piece of sound) in the container's order."""
        import av

        streams = [s for s in (self._video, self._audio) if s is not None]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        start = self._container.start_time / 1_000_000 if self._container.start_time else 0.0
        try:
            for packet in self._container.demux(*streams):
                if packet.stream is self._video and packet.pts is not None and packet.time_base is not None:
                    self._picture_sent = max(self._picture_sent, float(packet.pts * packet.time_base) - start)
                for frame in packet.decode():
                    if not isinstance(frame, (av.VideoFrame, av.AudioFrame)):
                        continue
                    if frame.time is None:
                        self._untimed += 1
                        continue
                    if isinstance(frame, av.VideoFrame):
                        yield max(0.0, float(frame.time) - start), frame
                        continue
                    try:
                        pieces = resampler.resample(frame)
                    except ValueError:  # the sound's format changed mid-stream (joined files, ad breaks)
                        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
                        pieces = resampler.resample(frame)
                    for piece in pieces:
                        t = float(piece.time) if piece.time is not None else float(frame.time)
                        yield max(0.0, t - start), piece.to_ndarray().reshape(-1).astype(np.float32, copy=False)
        except (av.FFmpegError, ValueError) as exc:
            if not self.info.live:
                raise SourceError(f"{self.info.name}: cannot be decoded past {self.end_time:.1f} s "
                                  f"({_reason(exc)})") from None
            self.stopped = f"the stream stopped at {self.end_time:.1f} s ({_reason(exc)})"

    def _picture(self, frame: "av.VideoFrame") -> np.ndarray:
        """The frame as RGB, scaled so that its longer side is at most ``max_side``."""
        w, h = frame.width, frame.height
        scale = min(1.0, self.max_side / max(w, h))
        width, height = max(1, round(w * scale)), max(1, round(h * scale))
        picture: np.ndarray = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
        return picture


class _SoundBuffer:
    """The decoded sound at SAMPLE_RATE from ``start`` (seconds) on, placed by its timestamps (a gap
    is silence, an overlap is cut); sound older than a window before the oldest waiting step is
    forgotten. Pieces are kept as they come and joined only when a window is cut or old sound is
    dropped, not on every piece decoded (which copied the whole buffer some 16 times a second)."""

    GAP = 0.05  # seconds of disagreement between a piece's timestamp and the buffer's end, tolerated
    RESTART = 60.0  # a jump larger than this starts the buffer anew (a live stream's discontinuity)

    def __init__(self, window: float) -> None:
        self.window_seconds = window
        self._pieces: list[np.ndarray] = []
        self._length = 0  # samples in the pieces
        self.start: float | None = None

    @property
    def end(self) -> float:
        return -math.inf if self.start is None else self.start + self._length / SAMPLE_RATE

    def _samples(self) -> np.ndarray:
        if len(self._pieces) != 1:
            self._pieces = [np.concatenate(self._pieces) if self._pieces else np.zeros(0, np.float32)]
        return self._pieces[0]

    def add(self, time: float, samples: np.ndarray) -> None:
        # Lossy codecs (AAC, Opus) overshoot full scale a little; the daemon takes [-1, 1].
        samples = np.clip(samples, -1.0, 1.0)
        if self.start is None or abs(time - self.end) > self.RESTART:
            self.start, self._pieces, self._length = time, [samples], len(samples)
            return
        gap = time - self.end
        if gap > self.GAP:
            silence = np.zeros(int(round(gap * SAMPLE_RATE)), np.float32)
            self._pieces.append(silence)
            self._length += len(silence)
        elif gap < -self.GAP:
            samples = samples[int(round(-gap * SAMPLE_RATE)):]
        self._pieces.append(samples)
        self._length += len(samples)

    def covers(self, t: float) -> bool:
        return self.end >= max(0.0, t - self.window_seconds / 2) + self.window_seconds

    def window(self, t: float, at_end: bool = False) -> np.ndarray | None:
        """The sound of ``[t - window/2, t + window/2]`` moved inside ``[0, end]``; silence where the
        span reaches before the sound began; ``None`` when less than 0.1 s of it was heard."""
        if self.start is None:
            return None
        begin = max(0.0, t - self.window_seconds / 2)
        if at_end:  # keep the whole window inside the recording where it is long enough
            begin = max(0.0, min(begin, self.end - self.window_seconds))
        finish = min(self.end, begin + self.window_seconds)
        a = int(round((begin - self.start) * SAMPLE_RATE))
        b = int(round((finish - self.start) * SAMPLE_RATE))
        heard = self._samples()[max(0, a):max(0, b)]
        if len(heard) < SAMPLE_RATE // 10:
            return None
        return np.concatenate([np.zeros(max(0, -a), np.float32), heard]) if a < 0 else heard.copy()

    def forget_before(self, t: float) -> None:
        """Drops sound older than a window before ``t`` (kept: at the end, a step's window moves back
        into the recording), once there is at least a window of it to drop."""
        if self.start is None:
            return
        drop = int((t - self.window_seconds - self.start) * SAMPLE_RATE)
        if drop >= self.window_seconds * SAMPLE_RATE:
            self._pieces = [self._samples()[drop:]]
            self._length -= drop
            self.start += drop / SAMPLE_RATE


def _reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(": '", 1)[0]
