"""``mcil watch``: a source's steps sent to Classify in batches, one answer per step, a timeline at the end.

    timeline = watch(source, classify, WatchConfig(every=1.0), on_answer=print)

A file is read as fast as it decodes and classifies, in batches of ``batch`` steps. A live source (a
camera, a stream; or a file with ``pace="live"``) is read at its own pace by a reader thread; each call
to Classify takes the steps that came in since the last one, and when more came than one batch, the
oldest are dropped (counted in ``Timeline.dropped``) so that answers stay current instead of falling
further and further behind. Ctrl-C ends watching; the timeline of what was answered is kept.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Callable, Generator, Iterator, Sequence

from video.source import MediaSource, Step
from video.timeline import Answer, Timeline

Classify = Callable[[Sequence[Step]], list[Answer]]
PACES = ("auto", "file", "live")


@dataclass(frozen=True)
class WatchConfig:
    every: float = 1.0  # seconds between steps
    window: float = 5.0  # seconds of sound per step (the daemon's audio_clip_seconds)
    batch: int = 8  # steps per Classify call
    # "auto": cameras and streams without a length are live, the rest files; "file": as fast as it
    # decodes, never dropping (a recorded stream); "live": at the source's own pace (a file by the clock)
    pace: str = "auto"

    def __post_init__(self) -> None:
        if self.pace not in PACES:
            raise ValueError(f"--pace: one of {', '.join(PACES)}, got {self.pace!r}")
        if not self.every > 0:
            raise ValueError(f"--every: must be > 0 seconds, got {self.every:g}")
        if not 1 <= self.batch <= 256:
            raise ValueError(f"--batch: between 1 and 256 steps, got {self.batch}")


def watch(source: MediaSource, classify: Classify, config: WatchConfig,
          on_answer: Callable[[Answer], None] = lambda _a: None) -> Timeline:
    """Watches ``source`` to its end (or Ctrl-C); returns the timeline. An error from ``classify`` ends
    watching: the timeline keeps what was answered and holds the error in ``failure``."""
    timeline = Timeline(source=source.info.name, every=config.every)
    steps = source.steps(every=config.every, window=config.window)
    live = config.pace == "live" or (config.pace == "auto" and source.info.live)
    batches = _live_batches(source, steps, config, timeline) if live else _file_batches(steps, config.batch)
    try:
        for batch in batches:
            try:
                answers = classify(batch)
            except Exception as exc:  # noqa: BLE001 - the daemon's refusal ends watching; what was answered stays
                timeline.ended = "the daemon stopped answering"
                timeline.failure = exc
                break
            for answer in answers:
                timeline.add(answer)
                on_answer(answer)
    except KeyboardInterrupt:
        timeline.ended = "stopped (Ctrl-C)"
    finally:
        batches.close()
    if source.stopped and timeline.ended == "end of the source":
        timeline.ended = source.stopped
    return timeline


def _file_batches(steps: Iterator[Step], size: int) -> Generator[list[Step], None, None]:
    batch: list[Step] = []
    for step in steps:
        batch.append(step)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _live_batches(source: MediaSource, steps: Iterator[Step], config: WatchConfig,
                  timeline: Timeline) -> Generator[list[Step], None, None]:
    """Batches of the newest steps; a reader thread keeps the source at its own pace."""
    waiting: collections.deque[Step] = collections.deque()
    ready = threading.Condition()
    done = threading.Event()
    failure: list[BaseException] = []

    def read() -> None:
        started = time.monotonic()
        try:
            for step in steps:
                if not source.info.live:  # a file played at its own pace
                    delay = started + step.time - time.monotonic()
                    if delay > 0 and done.wait(delay):
                        return
                if done.is_set():
                    return
                with ready:
                    waiting.append(step)
                    ready.notify()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            failure.append(exc)
        finally:
            done.set()
            with ready:
                ready.notify()

    reader = threading.Thread(target=read, name="watch-reader", daemon=True)
    reader.start()
    try:
        while True:
            with ready:
                while not waiting and not done.is_set():
                    ready.wait(0.5)
                taken = list(waiting)
                waiting.clear()
            if failure:
                raise failure[0]
            if not taken:
                if done.is_set():
                    return
                continue
            if len(taken) > config.batch:
                timeline.dropped += len(taken) - config.batch
                taken = taken[-config.batch:]
            yield taken
    finally:
        done.set()
        reader.join(timeout=5)
        if reader.is_alive():  # still inside a read (a stalled stream, a camera): closing under it would crash
            source.leave_open = True
