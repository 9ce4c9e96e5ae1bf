"""``mcil watch SOURCE``: the command's options, its live lines, and the daemon's answers as steps.

    mcil watch lesson.mp4 --out timeline.csv --out timeline.json --out timeline.svg
    mcil watch rtsp://camera.local/stream --every 2
    mcil watch /dev/video0 --max-duration 3600

Exit status as every ``mcil`` command: 0 when the timeline was written, 1 when the daemon refused
or could not be reached, 2 for a source or an ``--out`` that cannot be used (nothing is written).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Sequence

from video.source import SAMPLE_RATE, SourceError, Step, open_source
from video.timeline import UNKNOWN, Answer, check_outputs, write_outputs
from video.watch import PACES, WatchConfig, watch

if TYPE_CHECKING:
    from service.client import Client

REQUEST_BYTES = 3 * 1024 * 1024
"""A Classify request stays under this (the daemon's default limit is 4 MiB a message): a step of a
5 s sound window and a 320-pixel picture is about 0.55 MB."""


class WatchError(Exception):
    """A source or option that cannot be used: printed, exit status 2."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE",
                   help="a video or sound file, /dev/videoN (a camera), or a stream URL (rtsp://, http://, ...)")
    p.add_argument("--every", type=float, default=1.0, help="seconds between steps (default 1)")
    p.add_argument("--out", action="append", default=[], metavar="FILE",
                   help="timeline.csv, .json, .svg or .png (repeat for several)")
    p.add_argument("--batch", type=int, default=8, help="steps per Classify call (default 8)")
    p.add_argument("--max-duration", type=float, default=4 * 3600.0,
                   help="refuse a file longer than this, stop a live source at it (seconds; default 4 h)")
    p.add_argument("--pace", choices=PACES, default="auto",
                   help="auto (default): cameras and streams without a length at their own pace, dropping "
                        "steps when behind, files as fast as they decode; file: never drop (a recorded "
                        "stream); live: at the source's own pace (a file by the clock, to rehearse)")
    p.add_argument("--quiet", action="store_true", help="no line per step")


def run(args: argparse.Namespace, client: "Client") -> int:
    """Watches ``args.source`` with answers from ``client``; writes ``args.out``."""
    try:  # everything the user gave is checked before the daemon is asked anything
        outputs = check_outputs(args.out)
        WatchConfig(every=args.every, batch=args.batch, pace=args.pace)
        if not args.max_duration > 0:
            raise ValueError(f"--max-duration: must be > 0 seconds, got {args.max_duration:g}")
        source = open_source(args.source, max_duration=args.max_duration)
    except (ValueError, SourceError) as exc:
        raise WatchError(str(exc)) from None
    with source:
        config = WatchConfig(every=args.every, batch=args.batch, pace=args.pace, window=clip_seconds(client))
        info = source.info
        if not info.has_sound:
            print(f"{info.name}: no sound track; answering from the pictures alone (visual path)", file=sys.stderr)
        if not info.has_pictures:
            print(f"{info.name}: no pictures; answering from the sound alone (audio path)", file=sys.stderr)
        if info.width * info.height > 1920 * 1080:
            print(f"{info.name}: {info.width}x{info.height}, decoded and scaled down to at most "
                  f"{source.max_side} pixels a side", file=sys.stderr)
        started = time.monotonic()
        version = [0]  # the version that answered the latest call

        def classify(steps: Sequence[Step]) -> list[Answer]:
            answers, version[0] = classify_steps(client, steps)
            return answers

        def show(answer: Answer) -> None:
            if not args.quiet:
                print(answer_line(answer), flush=True)

        try:
            timeline = watch(source, classify, config, on_answer=show)
        except SourceError as exc:
            raise WatchError(str(exc)) from None
    timeline.model_version = version[0]
    if timeline.failure is not None and not timeline.answers:
        raise timeline.failure  # refused from the first call: nothing to keep, nothing written
    write_outputs(timeline, outputs)
    wrote = f"; wrote {', '.join(map(str, outputs))}" if outputs else ""
    if timeline.failure is not None:  # what was answered is written; then the daemon's error, exit 1
        print(f"{len(timeline.answers)} steps answered before the daemon stopped answering{wrote}", file=sys.stderr)
        raise timeline.failure
    elapsed = time.monotonic() - started
    print(f"{len(timeline.answers)} steps over {source.end_time:.1f} s of {info.name} in {elapsed:.1f} s "
          f"({timeline.ended}); {len(timeline.segments())} segments; {timeline.dropped} steps dropped to keep up"
          f"{wrote}", file=sys.stderr)
    return 0


def answer_line(answer: Answer) -> str:
    clock = f"{int(answer.time // 60)}:{answer.time % 60:05.2f}"
    if answer.unknown:
        return f"{clock:>9}  {UNKNOWN:<20} {answer.score:6.3f}  (nearest: {answer.nearest}; {answer.path})"
    return f"{clock:>9}  {answer.label:<20} {answer.score:6.3f}  ({answer.path})"


def classify_steps(client: "Client", steps: Sequence[Step],
                   max_request_bytes: int = REQUEST_BYTES) -> tuple[list[Answer], int]:
    """Classify calls for ``steps`` (as few as fit ``max_request_bytes`` each): an answer per step,
    and the version that answered the last call."""
    from service.client import PATH_NAMES, sample_from_arrays

    samples = [sample_from_arrays(s.image, s.audio, SAMPLE_RATE) for s in steps]
    sizes = [s.ByteSize() for s in samples]
    answers: list[Answer] = []
    version = 0
    start = 0
    while start < len(samples):
        end, size = start, 0
        while end < len(samples) and (end == start or size + sizes[end] <= max_request_bytes):
            size += sizes[end]
            end += 1
        reply = client.classify(samples[start:end], top_k=1)
        version = int(reply.model_version)
        for step, result in zip(steps[start:end], reply.results):
            best = result.classes[0] if len(result.classes) else None
            nearest, score = (best.name, float(best.score)) if best is not None else ("", 0.0)
            label = UNKNOWN if result.unknown or best is None else nearest
            answers.append(Answer(time=step.time, label=label, score=score, unknown=bool(result.unknown),
                                  path=PATH_NAMES.get(result.path, "unknown"), nearest=nearest))
        start = end
    return answers, version


def clip_seconds(client: "Client") -> float:
    """The sound the served model reads per sample (5 s where an older daemon does not say)."""
    seconds = float(client.model_info().audio_clip_seconds)
    return seconds if seconds > 0 else 5.0

