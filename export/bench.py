"""``python -m export.bench``: Classify latency per preset and runner, side by side, into docs/benchmarks.md.

For each preset and each runner that can run here, a learner with one learned task (synthetic
classes, one epoch: the experts and fusion are real, their accuracy is irrelevant) classifies
image+audio samples at batch sizes 1, 8 and 32. Reported per cell: median and p99 latency of
``Learner.predict`` (input preparation, frozen segments on the runner, experts, fusion, prototype
scores; no gRPC) and throughput (samples per second over all runs). A second table times the frozen
segments alone (image stem, blocks and head, and the audio encoder; no experts), which is what the
runner replaces. ONNX Runtime variants (NumPy inputs instead of IO binding, graph optimisations
off, two threads with and without IO binding) are timed too, to explain the defaults. Runners are interleaved
round by round, in a rotating order, so that they share the machine's load. Runners that cannot run
here are listed with the reason. Not a test: the figures depend on the machine, which is written with them.

    python -m export.bench --preset tiny lite --runs 30 --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from export.errors import RunnerUnavailableError
from export.manifest import Manifest, SegmentEntry
from export.onnx import configure_logging, ensure_exported
from export.runners import RUNNER_KINDS, SegmentFn, attach_runner, check_available, install_segments
from model.backbone import TriModalBackbone

if TYPE_CHECKING:
    from export.onnxruntime_runner import OrtSettings
    from model.learner import Learner
    from model.samples import Sample
    from model.towers import FrozenRunner

SECTION = "## Serving latency (export runners)"
BATCHES = (1, 8, 32)


@dataclass(frozen=True)
class Cell:
    preset: str
    runner: str
    what: str  # "classify" | "segments"
    batch: int
    median_ms: float
    p99_ms: float
    per_second: float
    runs: int


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(np.ceil(q / 100 * len(ordered))) - 1)]


WARMUP = 2


def samples_for(backbone: TriModalBackbone, n: int) -> list["Sample"]:
    from model.samples import Sample
    from model.synthetic import class_image

    rng = np.random.default_rng(0)
    t = np.arange(backbone.clip_samples) / backbone.sample_rate
    out = []
    for i in range(n):
        tone = 0.3 * np.sin(2 * np.pi * (220.0 + 55.0 * (i % 7)) * t) + 0.05 * rng.standard_normal(t.size)
        out.append(Sample(image=class_image(i % 3, rng, backbone.image_size), audio=tone.astype(np.float32),
                          sample_rate=backbone.sample_rate))
    return out


@torch.no_grad()
def frozen_only(backbone: TriModalBackbone, images: torch.Tensor, waves: torch.Tensor) -> None:
    """The frozen segments Classify runs, in order, without experts: what a runner replaces.

    (The text tower is not on the request path: prototypes are computed once per class change.)
    """
    tower = backbone.image
    r = tower.runner
    if r is not None:
        x, ctx = r.stem(images)
        for i in range(len(tower.blocks)):
            x, _ = r.block(i, x, ctx)
        r.head(x, ctx)
    else:
        x, ctx = tower.stem(images)
        for block in tower.blocks:
            x, _ = block(x, ctx)
        tower.head(x, ctx)
    backbone.encode_audio_raw(waves)


def learner_with_one_task(preset: str) -> "Learner":
    from model.learner import create_learner
    from model.learner_config import LearnerConfig
    from model.synthetic import make_dataset
    from model.training import TrainingConfig

    learner = create_learner(preset, config=LearnerConfig(training=TrainingConfig(epochs=1, batch_size=16)))
    names = ["red", "green", "blue"]
    learner.learn_task(make_dataset(names, 4, image_size=learner.backbone.image_size), names)
    return learner


def ort_variants() -> dict[str, "OrtSettings"]:
    """The ONNX Runtime settings compared with the defaults (see :class:`OrtSettings`)."""
    from export.onnxruntime_runner import OrtSettings

    return {
        "onnxruntime, NumPy inputs (no IO binding)": OrtSettings(io_binding=False),
        "onnxruntime, graph optimisations off": OrtSettings(optimization="disable"),
        "onnxruntime, 2 threads": OrtSettings(threads=2),
        "onnxruntime, 2 threads, NumPy inputs": OrtSettings(threads=2, io_binding=False),
        # No spinning-threads variant: spinning workers keep spinning after their own calls and slowed
        # every runner timed after them in the same process (eager tiny segments from ~4 ms to ~1.2 s).
    }


Runners = tuple["FrozenRunner | None", "FrozenRunner | None", "Callable[[torch.Tensor], torch.Tensor] | None"]


def bench_preset(preset: str, kinds: Sequence[str], folder: Path, runs: int, skipped: dict[str, str]) -> list[Cell]:
    """Times every runner of ``kinds`` and every ONNX Runtime variant, interleaved.

    Runners are attached once; each timed round then visits every runner and batch size in turn, so
    all of them see the same machine load (the development machine is shared).
    """
    from export.onnxruntime_runner import OrtSegment

    learner = learner_with_one_task(preset)
    backbone = learner.backbone
    ensure_exported(backbone, folder)
    samples = samples_for(backbone, max(BATCHES))
    prepared = {}
    for b in BATCHES:
        pictures = [s.image for s in samples[:b] if s.image is not None]
        sounds = [s.audio for s in samples[:b] if s.audio is not None]
        prepared[b] = (backbone.prepare_images(pictures), backbone.prepare_audio(sounds, [backbone.sample_rate] * b))

    def current() -> Runners:
        return backbone.image.runner, backbone.text.runner, backbone.audio_runner

    configs: dict[str, Runners] = {}
    for kind in kinds:
        try:
            in_use = attach_runner(backbone, kind, folder, fallback=False)
            configs[in_use] = current()  # after attaching (a subscript assignment evaluates its value first)
        except RunnerUnavailableError as exc:
            skipped[kind] = exc.missing
    if "onnxruntime" in configs:
        manifest = Manifest.load(folder)
        for label, settings in ort_variants().items():
            def open_segment(entry: SegmentEntry, settings: OrtSettings = settings) -> SegmentFn:
                return OrtSegment(folder / entry.files["fp32"].path, entry, "onnxruntime", settings)

            install_segments(backbone, manifest, open_segment)
            configs[label] = current()

    def use(runners: Runners) -> None:
        backbone.image.set_runner(runners[0])
        backbone.text.set_runner(runners[1])
        backbone.set_audio_runner(runners[2])

    def calls(b: int) -> dict[str, Callable[[], object]]:
        images, waves = prepared[b]
        return {"classify": lambda: learner.predict(samples[:b], top_k=5),
                "segments": lambda: frozen_only(backbone, images, waves)}

    times: dict[tuple[str, str, int], list[float]] = {}
    order = list(configs.items())
    for round_ in range(runs + WARMUP):
        shift = round_ % len(order)  # each round starts with a different runner
        for label, runners in order[shift:] + order[:shift]:
            use(runners)
            for b in BATCHES:
                for what, fn in calls(b).items():
                    started = time.perf_counter()
                    fn()
                    if round_ >= WARMUP:
                        times.setdefault((label, what, b), []).append(time.perf_counter() - started)
    attach_runner(backbone, "pytorch", None)
    return [Cell(preset, label, what, b, 1e3 * statistics.median(ts), 1e3 * percentile(ts, 99),
                 b * len(ts) / sum(ts), len(ts)) for (label, what, b), ts in times.items()]


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    import onnxruntime

    cpu = cpu_name()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} logical CPUs, {gpu}; torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), onnxruntime {onnxruntime.__version__}, Python "
            f"{platform.python_version()}; load average {os.getloadavg()[0]:.1f} at the start")


def render(cells: list[Cell], skipped: dict[str, str], header: str, command: str) -> str:
    lines = [SECTION, "", f"Measured with `{command}` on: {header}.", ""]
    for what, title in (("classify", "Classify (`Learner.predict`: preparation, frozen segments, experts, fusion)"),
                        ("segments", "Frozen segments only (image tower stem, blocks and head, audio encoder; "
                                     "no experts)")):
        lines += [f"{title}, median / p99 latency in ms and throughput in samples/s:", "",
                  "| preset | runner | " + " | ".join(f"batch {b}" for b in BATCHES) + " |",
                  "|---|---|" + "---|" * len(BATCHES)]
        rows: dict[tuple[str, str], dict[int, Cell]] = {}
        for c in cells:
            if c.what == what:
                rows.setdefault((c.preset, c.runner), {})[c.batch] = c
        for (preset, runner), by_batch in rows.items():
            lines.append(f"| {preset} | {runner} | " + " | ".join(
                f"{by_batch[b].median_ms:.1f} / {by_batch[b].p99_ms:.1f} ms, {by_batch[b].per_second:.0f}/s"
                for b in BATCHES) + " |")
        lines.append("")
    runs = sorted({c.runs for c in cells})
    lines.append(f"{', '.join(map(str, runs))} timed runs per cell after {WARMUP} warm-up rounds, runners "
                 "interleaved round by round in a rotating order; load average "
                 f"{os.getloadavg()[0]:.1f} at the end. Throughput: samples per second over the timed runs of "
                 "one caller.")
    for kind, why in skipped.items():
        lines.append(f"Not run: `{kind}` ({why}).")
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str, heading: str = SECTION) -> None:
    """Replaces the section of ``path`` that starts with ``heading`` (up to the next ``## `` heading)
    by ``section``, or appends it, leaving other sections alone."""
    text = path.read_text() if path.is_file() else "# Benchmarks\n\n"
    start = text.find(heading)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
    path.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", nargs="+", default=["tiny", "lite"])
    parser.add_argument("--runner", nargs="+", default=list(RUNNER_KINDS[::-1]), choices=RUNNER_KINDS)
    parser.add_argument("--runs", type=int, default=30, help="timed runs per cell")
    parser.add_argument("--artifacts", type=Path, default=None, help="export folder root (default: temporary)")
    parser.add_argument("--write", type=Path, default=None, help="markdown file to put the table in")
    args = parser.parse_args(argv)
    configure_logging()
    header = machine()
    skipped: dict[str, str] = {}
    for kind in args.runner:
        try:
            check_available(kind)
        except RunnerUnavailableError as exc:
            skipped[kind] = exc.missing
    kinds = [k for k in args.runner if k not in skipped]
    cells: list[Cell] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.artifacts or Path(tmp)
        for preset in args.preset:
            cells += bench_preset(preset, kinds, root / preset, args.runs, skipped)
    command = "python -m export.bench " + " ".join(argv if argv is not None else sys.argv[1:])
    section = render(cells, skipped, header, command.strip())
    print(section)
    if args.write is not None:
        write_section(args.write, section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
