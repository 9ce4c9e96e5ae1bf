"""Decoding sources into steps: times, pictures scaled down, sound windows, and what is refused."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from video.compose import Segment, write_recording
from video.source import MAX_SIDE, SAMPLE_RATE, SourceError, is_live, open_source

pytest.importorskip("av")


def tone(seconds: float, hz: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def colour(rgb: tuple[int, int, int]) -> np.ndarray:
    return np.tile(np.array(rgb, np.uint8), (24, 32, 1))


@pytest.fixture(scope="module")
def two_scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s red with a 440 Hz tone, then 3 s blue with 2 kHz."""
    path = tmp_path_factory.mktemp("video") / "two.mp4"
    return write_recording(path, [Segment(colour((255, 0, 0)), tone(3, 440), 3.0),
                                  Segment(colour((0, 0, 255)), tone(3, 2000), 3.0)])


def dominant_hz(wave: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(wave))
    return float(np.argmax(spectrum) * SAMPLE_RATE / len(wave))


def test_steps_take_the_picture_and_the_sound_around_each_moment(two_scenes: Path) -> None:
    with open_source(str(two_scenes)) as source:
        assert source.info.has_pictures and source.info.has_sound and not source.info.live
        steps = list(source.steps(every=1.0, window=1.0))
    assert [s.time for s in steps] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    for s in steps:
        assert s.image is not None and s.audio is not None
        assert len(s.audio) == SAMPLE_RATE and np.abs(s.audio).max() <= 1.0
    red, blue = steps[1], steps[4]
    assert red.image[..., 0].mean() > 150 > red.image[..., 2].mean()
    assert blue.image[..., 2].mean() > 150 > blue.image[..., 0].mean()
    assert abs(dominant_hz(red.audio) - 440) < 20 and abs(dominant_hz(blue.audio) - 2000) < 20


def test_a_window_longer_than_the_start_stays_inside_the_recording(two_scenes: Path) -> None:
    with open_source(str(two_scenes)) as source:
        first, *_rest, last = source.steps(every=1.0, window=4.0)
    assert first.time == 0.0 and len(first.audio) == 4 * SAMPLE_RATE  # [0, 4), not [-2, 2)
    assert last.time == 5.0 and abs(len(last.audio) - 4 * SAMPLE_RATE) < SAMPLE_RATE // 10  # ends at the end


def test_a_recording_without_sound_gives_pictures_only(tmp_path: Path) -> None:
    path = write_recording(tmp_path / "silent.mp4", [Segment(colour((0, 255, 0)), None, 2.0)], sound=False)
    with open_source(str(path)) as source:
        assert not source.info.has_sound
        steps = list(source.steps(every=0.5, window=1.0))
    assert len(steps) == 4 and all(s.image is not None and s.audio is None for s in steps)


def test_a_sound_file_gives_sound_only(tmp_path: Path) -> None:
    path = write_recording(tmp_path / "voice.m4a", [Segment(None, tone(3, 440), 3.0)], pictures=False)
    with open_source(str(path)) as source:
        assert not source.info.has_pictures
        steps = list(source.steps(every=1.0, window=1.0))
    assert [s.time for s in steps] == [0.0, 1.0, 2.0]
    assert all(s.image is None and s.audio is not None and len(s.audio) == SAMPLE_RATE for s in steps)


@pytest.mark.slow
def test_8k_pictures_are_decoded_scaled_down(tmp_path: Path) -> None:
    path = write_recording(tmp_path / "8k.mp4", [Segment(colour((200, 100, 0)), None, 1.0)], size=(7680, 4320),
                           fps=2, sound=False)
    with open_source(str(path)) as source:
        assert (source.info.width, source.info.height) == (7680, 4320)
        steps = list(source.steps(every=0.5))
    assert [s.image.shape for s in steps] == [(180, MAX_SIDE, 3)] * 2


def test_what_is_not_a_video_is_refused_by_name(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 100)
    with pytest.raises(SourceError, match=r"notes.mp4: not a video or sound file that can be read"):
        open_source(str(text))
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(SourceError, match="a directory"):
        open_source(str(tmp_path))
    from PIL import Image

    Image.fromarray(colour((1, 2, 3))).save(tmp_path / "still.png")
    with pytest.raises(SourceError, match="a still picture"):
        open_source(str(tmp_path / "still.png"))


def test_a_file_longer_than_max_duration_is_refused_before_reading(two_scenes: Path) -> None:
    with pytest.raises(SourceError, match=r"lasts 6.0 s, more than --max-duration 5 s"):
        open_source(str(two_scenes), max_duration=5)


def test_cameras_and_streams_are_live_files_are_not() -> None:
    assert is_live("rtsp://camera.local/stream") and is_live("http://host/live.ts") and is_live("/dev/video0")
    assert not is_live("lesson.mp4") and not is_live("./rtsp-recording.mkv")


def test_pictures_do_not_wait_for_a_sound_track_that_ended(tmp_path: Path) -> None:
    """20 s of pictures, 3 s of sound: later steps go on without sound, while the file is read."""
    frames = [Segment(colour((10 * i, 0, 0)), tone(3, 440) if i == 0 else None, 1.0) for i in range(20)]
    path = write_recording(tmp_path / "short-sound.mkv", frames)
    with open_source(str(path)) as source:
        seen_at = {s.time: source.end_time for s in source.steps(every=1.0, window=1.0)}
    assert sorted(seen_at) == [float(t) for t in range(20)]
    assert seen_at[8.0] < 15  # released long before the end, not held until it


def test_when_the_pictures_stop_the_sound_goes_on(tmp_path: Path) -> None:
    """Four seconds of pictures over twelve of sound."""
    import av

    path = tmp_path / "pictures-stop.mkv"
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=2)
        video.width, video.height, video.pix_fmt = 32, 24, "yuv420p"
        audio = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        for i in range(8):
            frame = av.VideoFrame.from_ndarray(colour((0, 200, 0)), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 2)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        wave = tone(12, 440)
        for start in range(0, len(wave), 1024):
            piece = av.AudioFrame.from_ndarray(wave[None, start:start + 1024], format="flt", layout="mono")
            piece.sample_rate, piece.pts, piece.time_base = SAMPLE_RATE, start, Fraction(1, SAMPLE_RATE)
            out.mux(audio.encode(piece))
        out.mux(audio.encode(None))
    with open_source(str(path)) as source:
        steps = list(source.steps(every=1.0, window=1.0))
    assert [s.time for s in steps] == [float(t) for t in range(12)]
    # The decoder hands over the last few pictures only at the end of the file: steps 2 and 3 may go without.
    assert all(s.image is not None for s in steps[:2]) and all(s.image is None for s in steps[5:])
    assert all(s.audio is not None for s in steps)


def test_sound_is_placed_by_its_timestamps() -> None:
    from video.source import _SoundBuffer

    buffer = _SoundBuffer(window=2.0)
    buffer.add(3.0, np.ones(SAMPLE_RATE, np.float32))  # the sound starts at 3 s
    buffer.add(6.0, np.ones(SAMPLE_RATE, np.float32))  # 2 s lost on the way
    assert buffer.end == pytest.approx(7.0)
    window = buffer.window(5.0)  # [4, 6): silence where packets were lost
    assert window is not None and window.sum() == 0
    early = buffer.window(3.0)  # [2, 4): silence before the sound began, then 1 s of it
    assert early is not None and len(early) == 2 * SAMPLE_RATE and early[:SAMPLE_RATE].sum() == 0
    assert early[SAMPLE_RATE:].min() == 1.0
