"""``python -m bench.watch``: ``mcil watch`` on recordings built from ESC-CIFAR, against a real daemon.

    python -m bench.watch --data ../shared/data/esc-cifar --out docs/reports/watch.json

1. **Accuracy.** Three classes are taught from labelled clips made of train.csv (each clip: four
   photos of the class, 2.5 s each, over two of its sound clips); a recording made of test.csv
   (other recordings, other photos) shows segments of 10 s, each one photo while one clip of the
   same class plays (twice), of the taught classes and of two classes never taught. Scored on the
   steps whose sound window lies wholly inside one segment: the taught segments whose majority answer
   is their class, the untaught ones whose majority answer is ``unknown``, and the same per step.
2. **Cost.** ``mcil watch`` on a 10-minute 720p recording (25 frames a second, sound): wall time and
   the client's peak memory, with the default batch of 8 steps a call and with one step a call; and
   the round trip of one unary call (GetModelInfo) beside a Classify of one step.

The daemon (``lite`` by default; ``service/chaos/process.py`` starts it, with the settings a user gets)
and every ``mcil`` command run as processes of their own. The recordings are written under ``--work`` (kept, so a second run reuses them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from model.data import read_split
from model.samples import LabeledSample
from video.compose import Segment, write_recording
from video.source import SAMPLE_RATE

TAUGHT = ("airplane", "frog", "ship")
UNTAUGHT = ("dog", "automobile")
CLIP_PHOTOS, PHOTO_SECONDS = 4, 2.5


@dataclass(frozen=True)
class Scene:
    """A segment of a built recording: its class, where it starts and ends (seconds)."""

    label: str
    start: float
    end: float


def distinct_sounds(samples: Sequence[LabeledSample], label: str) -> list[LabeledSample]:
    """The class's rows with a sound not seen in an earlier row (ESC-CIFAR repeats each clip)."""
    seen: set[bytes] = set()
    out = []
    for s in samples:
        if s.label == label and s.audio is not None:
            key = np.ascontiguousarray(s.audio).tobytes()
            if key not in seen:
                seen.add(key)
                out.append(s)
    return out


def teaching_clips(train: Sequence[LabeledSample], folder: Path, classes: Sequence[str] = TAUGHT,
                   per_class: int = 6, size: tuple[int, int] = (160, 120)) -> dict[str, list[Path]]:
    """``per_class`` clips of each class, 10 s each: four photos over two of its sounds."""
    folder.mkdir(parents=True, exist_ok=True)
    clips: dict[str, list[Path]] = {}
    samples_per_photo = int(PHOTO_SECONDS * SAMPLE_RATE)
    for name in classes:
        sounds = distinct_sounds(train, name)
        photos = [s for s in train if s.label == name]
        if len(sounds) < 2 * per_class or len(photos) < CLIP_PHOTOS * per_class:
            raise ValueError(f"{name}: too few rows for {per_class} clips")
        clips[name] = []
        for i in range(per_class):
            sound = np.concatenate([_five_seconds(sounds[2 * i]), _five_seconds(sounds[2 * i + 1])])
            parts = [Segment(photos[CLIP_PHOTOS * i + j].image, sound[j * samples_per_photo:(j + 1) * samples_per_photo],
                             PHOTO_SECONDS) for j in range(CLIP_PHOTOS)]
            clips[name].append(write_recording(folder / f"{name}-{i}.mp4", parts, size=size))
    return clips


def lesson(test: Sequence[LabeledSample], path: Path, *, per_class: int = 2, seconds: float = 10.0,
           classes: Sequence[str] = TAUGHT + UNTAUGHT, size: tuple[int, int] = (320, 240), fps: int = 10,
           seed: int = 0, repeat_to: float | None = None) -> list[Scene]:
    """A recording of ``per_class`` segments of each class in a shuffled order (its scenes returned);
    with ``repeat_to``, the order is repeated until the recording lasts that many seconds."""
    rng = np.random.default_rng(seed)
    chosen = [(name, s) for name in classes for s in distinct_sounds(test, name)[:per_class]]
    order = [chosen[i] for i in rng.permutation(len(chosen))]
    if repeat_to is not None:
        order = [order[i % len(order)] for i in range(int(np.ceil(repeat_to / seconds)))]
    segments, scenes = [], []
    for k, (name, s) in enumerate(order):
        loops = int(np.ceil(seconds / 5.0))
        segments.append(Segment(s.image, np.tile(_five_seconds(s), loops), seconds))
        scenes.append(Scene(name, k * seconds, (k + 1) * seconds))
    write_recording(path, segments, size=size, fps=fps)
    return scenes


def score(answers: Sequence[dict[str, object]], scenes: Sequence[Scene], window: float,
          taught: Sequence[str] = TAUGHT) -> dict[str, int]:
    """Segment and step figures over the steps whose sound window lies inside one scene."""
    figures = {"taught_segments": 0, "taught_right": 0, "untaught_segments": 0, "untaught_unknown": 0,
               "taught_steps": 0, "taught_steps_right": 0, "untaught_steps": 0, "untaught_steps_unknown": 0}
    for scene in scenes:
        labels = [str(a["label"]) for a in answers
                  if scene.start + window / 2 <= float(a["time"]) <= scene.end - window / 2]  # type: ignore[arg-type]
        if not labels:
            continue
        majority = max(set(labels), key=labels.count)
        if scene.label in taught:
            figures["taught_segments"] += 1
            figures["taught_right"] += majority == scene.label
            figures["taught_steps"] += len(labels)
            figures["taught_steps_right"] += labels.count(scene.label)
        else:
            figures["untaught_segments"] += 1
            figures["untaught_unknown"] += majority == "unknown"
            figures["untaught_steps"] += len(labels)
            figures["untaught_steps_unknown"] += labels.count("unknown")
    return figures


def _five_seconds(sample: LabeledSample) -> np.ndarray:
    wave = np.asarray(sample.audio, np.float32)
    n = 5 * SAMPLE_RATE
    return np.pad(wave[:n], (0, max(0, n - len(wave))))


# -- the command ------------------------------------------------------------------------------------


def _mcil(target: str, *args: str) -> tuple[float, float, str]:
    """Runs ``mcil`` as a process: (seconds, its peak memory in MiB, its stdout).

    The peak is the process's own VmHWM, read every 20 ms while it runs: ``wait4``'s ``ru_maxrss``
    would count this (much larger) process, whose memory a forked child starts from on Linux."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "service.cli", "--target", target, *args],
                                stdout=out, stderr=err, text=True)
        peak_kib = 0
        while proc.poll() is None:
            peak_kib = max(peak_kib, _vm_hwm_kib(proc.pid))
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"mcil {' '.join(args[:2])} failed ({proc.returncode}): {err.read().strip()[-2000:]}")
        return seconds, peak_kib / 1024, out.read()


def _vm_hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _setting(value: object) -> str:
    return "null" if value is None else str(value)


def run(args: argparse.Namespace) -> dict[str, object]:
    from service.chaos.process import FAST_SETTINGS, DaemonProcess
    from service.client import sample_from_arrays
    from service.config_loader import load_config

    work = Path(args.work)
    train, test = read_split(args.data, "train").samples, read_split(args.data, "test").samples
    clips = teaching_clips(train, work / "clips")
    scenes = lesson(test, work / "lesson.mp4")
    state = Path(tempfile.mkdtemp(prefix="watch-state-"))
    defaults = load_config(None, {})  # undo the chaos harness's quick settings: measure what users run
    settings = {key: _setting(getattr(getattr(defaults, key.split(".")[0]), key.split(".")[1])) for key in FAST_SETTINGS}
    settings["server.light"] = "false"  # one process, as the report in docs/benchmarks.md was measured
    daemon = DaemonProcess(state / "state", preset=args.preset, settings=settings, log_path=state / "daemon.log",
                           start_timeout=300)
    target, client = daemon.target, daemon.client
    result: dict[str, object] = {"preset": args.preset, "data": str(args.data)}
    try:
        window = float(client.model_info().audio_clip_seconds)
        learn = ["learn", "--quiet", "--request-id", "bench-watch"]  # the held-out split is seeded by it: every run alike
        for name, files in clips.items():
            learn += ["--class", name, "--video", *map(str, files)]
        result["learn_seconds"], _, _ = _mcil(target, *learn)
        while client.model_info().runner == "pytorch" and args.preset == "lite":
            time.sleep(1)  # measure the served form users get: the compiled version
        out = work / "lesson.json"
        result["lesson_seconds"], _, _ = _mcil(target, "watch", str(work / "lesson.mp4"), "--quiet",
                                               "--out", str(out))
        result["accuracy"] = score(json.loads(out.read_text())["answers"], scenes, window)
        long = work / "long-720p.mp4"
        if not long.exists():
            lesson(test, long, size=(1280, 720), fps=25, repeat_to=600.0)
        for batch in (8, 1):
            seconds, peak, _ = _mcil(target, "watch", str(long), "--quiet", "--batch", str(batch))
            result[f"long_720p_batch{batch}"] = {"seconds": round(seconds, 1), "client_peak_mib": round(peak, 1),
                                                 "steps": 600}
        one = test[0]
        sample = sample_from_arrays(one.image, _five_seconds(one), SAMPLE_RATE)
        rounds: dict[str, list[float]] = {"model_info_ms": [], "classify_one_step_ms": []}
        for _ in range(20):
            t = time.perf_counter()
            client.model_info()
            rounds["model_info_ms"].append(1000 * (time.perf_counter() - t))
            t = time.perf_counter()
            client.classify([sample], top_k=1)
            rounds["classify_one_step_ms"].append(1000 * (time.perf_counter() - t))
        result["round_trip"] = {k: round(float(np.median(v)), 2) for k, v in rounds.items()}
    finally:
        daemon.close()
    result["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.watch", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/esc-cifar"), help="the ESC-CIFAR folder")
    p.add_argument("--preset", default="lite", choices=("lite", "tiny"))
    p.add_argument("--work", default=Path(tempfile.gettempdir()) / "mcil-watch-bench", type=Path,
                   help="where the recordings are written (kept for a second run)")
    p.add_argument("--out", type=Path, required=True, help="the JSON report")
    args = p.parse_args(argv)
    if not (args.data / "train.csv").is_file():
        print(f"error: --data: no train.csv in {args.data} (the ESC-CIFAR folder)", file=sys.stderr)
        return 2
    if args.out.is_dir():
        print(f"error: --out: {args.out} is a folder; name the JSON file", file=sys.stderr)
        return 2
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
