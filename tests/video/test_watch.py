"""The watch loop: batches from files, a live source that drops steps to keep up, Ctrl-C, a stream
that stops (a real HTTP server on loopback that cuts the connection)."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pytest

from video.compose import Segment, write_recording
from video.source import SAMPLE_RATE, Step, open_source
from video.timeline import Answer
from video.watch import WatchConfig, watch

pytest.importorskip("av")


def answers_for(steps: Sequence[Step], delay: float = 0.0) -> list[Answer]:
    """A classifier of our own: the brighter channel of the picture, after ``delay`` seconds."""
    time.sleep(delay)
    return [Answer(s.time, "red" if s.image[..., 0].mean() > s.image[..., 2].mean() else "blue", 1.0, False,
                   "audio-visual") for s in steps]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    red, blue = (np.tile(np.array(c, np.uint8), (16, 16, 1)) for c in ((255, 0, 0), (0, 0, 255)))
    hum = (0.2 * np.sin(np.arange(2 * SAMPLE_RATE) / 10)).astype(np.float32)
    return write_recording(tmp_path_factory.mktemp("rec") / "rb.ts", [Segment(red, hum, 2.0), Segment(blue, hum, 2.0)])


def test_a_file_is_answered_in_batches_in_order(recording: Path) -> None:
    calls: list[int] = []

    def classify(steps: Sequence[Step]) -> list[Answer]:
        calls.append(len(steps))
        return answers_for(steps)

    with open_source(str(recording)) as source:
        timeline = watch(source, classify, WatchConfig(every=0.5, window=1.0, batch=3))
    assert calls == [3, 3, 2] and timeline.dropped == 0 and timeline.ended == "end of the source"
    assert [(s.label, s.start, s.end) for s in timeline.segments()] == [("red", 0.0, 2.0), ("blue", 2.0, 4.0)]


def test_a_live_source_drops_steps_rather_than_fall_behind(recording: Path) -> None:
    with open_source(str(recording)) as source:
        timeline = watch(source, lambda steps: answers_for(steps, delay=1.0),
                         WatchConfig(every=0.25, window=1.0, batch=1, pace="live"))
    assert timeline.dropped > 0 and len(timeline.answers) + timeline.dropped == 16
    assert [a.time for a in timeline.answers] == sorted(a.time for a in timeline.answers)


def test_ctrl_c_keeps_what_was_answered(recording: Path) -> None:
    seen: list[Answer] = []

    def classify(steps: Sequence[Step]) -> list[Answer]:
        if seen:
            raise KeyboardInterrupt
        seen.extend(answers_for(steps))
        return seen[:]

    with open_source(str(recording)) as source:
        timeline = watch(source, classify, WatchConfig(every=0.5, window=1.0, batch=2))
    assert timeline.ended == "stopped (Ctrl-C)" and len(timeline.answers) == 2


def test_a_daemon_that_stops_answering_ends_watching_with_what_was_answered(recording: Path) -> None:
    def classify(steps: Sequence[Step]) -> list[Answer]:
        if calls:
            raise ConnectionError("the daemon went away")
        calls.append(1)
        return answers_for(steps)

    calls: list[int] = []
    with open_source(str(recording)) as source:
        timeline = watch(source, classify, WatchConfig(every=0.5, window=1.0, batch=3))
    assert len(timeline.answers) == 3 and isinstance(timeline.failure, ConnectionError)
    assert timeline.ended == "the daemon stopped answering"


def serve(data: bytes, cut: bool) -> tuple[http.server.ThreadingHTTPServer, str]:
    """``http://127.0.0.1:PORT/video``: the whole file with its length, or half of it without and a hang-up."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            if not cut:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()  # without a length: a live stream
            self.wfile.write(data[: len(data) // 2] if cut else data)
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/video"


@pytest.mark.integration
def test_a_recording_served_over_http_is_read_as_a_file(recording: Path, tmp_path: Path) -> None:
    red, blue = (np.tile(np.array(c, np.uint8), (16, 16, 1)) for c in ((255, 0, 0), (0, 0, 255)))
    hum = (0.2 * np.sin(np.arange(2 * SAMPLE_RATE) / 10)).astype(np.float32)
    mkv = write_recording(tmp_path / "rb.mkv", [Segment(red, hum, 2.0), Segment(blue, hum, 2.0)])  # its length in its header
    server, url = serve(mkv.read_bytes(), cut=False)
    try:
        with open_source(url, timeout=5) as source:
            assert not source.info.live and source.info.duration  # a length: not dropped to keep up
            timeline = watch(source, answers_for, WatchConfig(every=0.5, window=1.0, batch=2))
    finally:
        server.shutdown()
        server.server_close()
    assert len(timeline.answers) == 8 and timeline.dropped == 0


@pytest.fixture
def cut_stream(recording: Path) -> Iterator[str]:
    """An MPEG-TS stream with no length that sends the first half of the recording, then hangs up."""
    server, url = serve(recording.read_bytes(), cut=True)
    yield url
    server.shutdown()
    server.server_close()


@pytest.mark.integration
def test_a_recorded_stream_with_no_length_can_be_read_whole(cut_stream: str) -> None:
    with open_source(cut_stream, timeout=5) as source:
        assert source.info.live  # MPEG-TS states no length
        timeline = watch(source, lambda steps: answers_for(steps, delay=0.5),
                         WatchConfig(every=0.5, window=1.0, batch=1, pace="file"))
    assert timeline.dropped == 0 and len(timeline.answers) > 0


@pytest.mark.integration
def test_a_stream_that_stops_ends_with_what_was_seen(cut_stream: str) -> None:
    with open_source(cut_stream, timeout=5) as source:
        assert source.info.live
        timeline = watch(source, answers_for, WatchConfig(every=0.5, window=1.0, batch=4))
    assert 0 < len(timeline.answers) < 8  # the first half, answered
    assert timeline.ended.startswith(("the stream stopped at ", "the stream ended at "))  # said, not raised
    assert {a.label for a in timeline.answers} <= {"red", "blue"}
