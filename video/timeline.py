"""What ``mcil watch`` saw: one answer per step, merged into segments, written as CSV, JSON, SVG or PNG.

    timeline = Timeline(source="lesson.mp4", every=1.0)
    timeline.add(Answer(time=0.0, label="clapping", score=0.81, unknown=False, path="audio-visual"))
    timeline.segments()          # [Segment("clapping", start=0.0, end=1.0, mean_score=0.81, steps=1)]
    write_outputs(timeline, ["timeline.csv", "timeline.json", "timeline.svg"])

A segment is a run of consecutive steps with the same answer (``unknown`` is an answer of its own);
it ends where the next step begins, or one step after its last where steps are missing (dropped). Files are written whole or not at all: each goes to a temporary
name beside it and is renamed into place once complete.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

UNKNOWN = "unknown"
SUFFIXES = (".csv", ".json", ".svg", ".png")


@dataclass(frozen=True)
class Answer:
    """The daemon's answer for one step."""

    time: float  # seconds from the start of the source
    label: str  # the class, or ``unknown``
    score: float  # the score of the best class (also when the answer is unknown)
    unknown: bool
    path: str  # "audio-visual", "visual" or "audio": what the step carried
    nearest: str = ""  # the best class, also when the answer is unknown


@dataclass(frozen=True)
class TimelineSegment:
    label: str
    start: float
    end: float
    mean_score: float
    steps: int


@dataclass
class Timeline:
    source: str
    every: float
    answers: list[Answer] = field(default_factory=list)
    dropped: int = 0  # steps of a live source left out to keep up
    ended: str = "end of the source"  # why watching stopped
    model_version: int = 0
    failure: Exception | None = None  # the daemon's error that ended watching, if one did

    def add(self, answer: Answer) -> None:
        self.answers.append(answer)

    def segments(self) -> list[TimelineSegment]:
        merged: list[TimelineSegment] = []
        run: list[Answer] = []
        for answer in [*self.answers, None]:
            gap = answer is not None and bool(run) and answer.time - run[-1].time > 1.5 * self.every  # dropped steps
            if run and (answer is None or answer.label != run[0].label or gap):
                scores = [a.score for a in run]
                merged.append(TimelineSegment(run[0].label, run[0].time, run[-1].time + self.every,
                                              sum(scores) / len(scores), len(run)))
                run = []
            if answer is not None:
                run.append(answer)
        return merged

    def to_dict(self) -> dict[str, object]:
        return {"source": self.source, "every": self.every, "model_version": self.model_version,
                "steps": len(self.answers), "dropped": self.dropped, "ended": self.ended,
                "segments": [asdict(s) for s in self.segments()],
                "answers": [asdict(a) for a in self.answers]}


def check_outputs(paths: Sequence[str | Path]) -> list[Path]:
    """The ``--out`` files, refused (ValueError naming the file) before anything is watched."""
    checked = []
    for p in map(Path, paths):
        if p.suffix.lower() not in SUFFIXES:
            raise ValueError(f"--out {p}: write .csv, .json, .svg or .png")
        if p.is_dir():
            raise ValueError(f"--out {p}: a folder; name a file")
        if not p.parent.is_dir():
            raise ValueError(f"--out {p}: no folder {p.parent}")
        probe = p.with_name(f".{p.name}.partial")
        try:  # found now, not after an hour of watching
            probe.touch()
            probe.unlink()
        except OSError as exc:
            raise ValueError(f"--out {p}: cannot be written ({exc.strerror})") from None
        checked.append(p)
    return checked


def write_outputs(timeline: Timeline, paths: Sequence[Path]) -> None:
    """Writes each file whole (temporary name, then rename); a failure leaves no part-written file."""
    for path in paths:
        data = render(timeline, path.suffix.lower())
        tmp = path.with_name(f".{path.name}.partial")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def render(timeline: Timeline, suffix: str) -> bytes:
    if suffix == ".json":
        return (json.dumps(timeline.to_dict(), indent=2) + "\n").encode()
    if suffix == ".csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["class", "start", "end", "mean_score", "steps"])
        for s in timeline.segments():
            writer.writerow([s.label, f"{s.start:.3f}", f"{s.end:.3f}", f"{s.mean_score:.4f}", s.steps])
        return out.getvalue().encode()
    if suffix == ".svg":
        return _svg(timeline).encode()
    if suffix == ".png":
        return _png(timeline)
    raise ValueError(f"{suffix}: write .csv, .json, .svg or .png")


# -- the picture: one row per class (unknown last), a bar per segment, a time axis ---------------------

_WIDTH, _ROW, _LEFT, _TOP = 960, 22, 150, 30
_PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
            "#9c755f", "#bab0ac")


def _layout(timeline: Timeline) -> tuple[list[str], float, list[tuple[int, float, float, str]], list[float]]:
    """Rows (labels), the time span, bars (row, x0, x1, colour) in pixels, and axis ticks (seconds)."""
    segments = timeline.segments()
    labels = sorted({s.label for s in segments} - {UNKNOWN})
    if any(s.label == UNKNOWN for s in segments):
        labels.append(UNKNOWN)
    span = max((s.end for s in segments), default=timeline.every)
    scale = (_WIDTH - _LEFT - 20) / span
    bars = []
    for s in segments:
        row = labels.index(s.label)
        colour = "#999999" if s.label == UNKNOWN else _PALETTE[row % len(_PALETTE)]
        bars.append((row, _LEFT + s.start * scale, _LEFT + s.end * scale, colour))
    step = next(t for t in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 10**9) if span / t <= 12)
    ticks = [float(t) for t in range(0, int(span) + 1, step)]
    return labels, scale, bars, ticks


def _svg(timeline: Timeline) -> str:
    from xml.sax.saxutils import escape as xml_escape

    def escape(text: str) -> str:  # XML 1.0 has no control characters
        return xml_escape("".join(c for c in text if c >= " " or c == "\t"))

    labels, scale, bars, ticks = _layout(timeline)
    height = _TOP + _ROW * len(labels) + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" '
             f'font-family="sans-serif" font-size="12">',
             f'<text x="10" y="18">{escape(timeline.source)}: {len(timeline.answers)} steps every '
             f'{timeline.every:g} s, {timeline.dropped} dropped</text>']
    for i, label in enumerate(labels):
        y = _TOP + i * _ROW
        parts.append(f'<text x="{_LEFT - 8}" y="{y + 15}" text-anchor="end">{escape(label)}</text>')
    for row, x0, x1, colour in bars:
        parts.append(f'<rect x="{x0:.1f}" y="{_TOP + row * _ROW + 3}" width="{max(x1 - x0, 1):.1f}" '
                     f'height="{_ROW - 6}" fill="{colour}"/>')
    axis = _TOP + _ROW * len(labels) + 4
    parts.append(f'<line x1="{_LEFT}" y1="{axis}" x2="{_WIDTH - 20}" y2="{axis}" stroke="black"/>')
    for t in ticks:
        x = _LEFT + t * scale
        parts.append(f'<text x="{x:.1f}" y="{axis + 16}" text-anchor="middle">{_clock(t)}</text>')
    parts.append("</svg>\n")
    return "\n".join(parts)


def _png(timeline: Timeline) -> bytes:
    from PIL import Image, ImageDraw

    labels, scale, bars, ticks = _layout(timeline)
    height = _TOP + _ROW * len(labels) + 40
    image = Image.new("RGB", (_WIDTH, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 6), f"{timeline.source}: {len(timeline.answers)} steps every {timeline.every:g} s, "
                       f"{timeline.dropped} dropped", fill="black")
    for i, label in enumerate(labels):
        draw.text((_LEFT - 8, _TOP + i * _ROW + 5), label, fill="black", anchor="ra")
    for row, x0, x1, colour in bars:
        draw.rectangle((x0, _TOP + row * _ROW + 3, max(x1, x0 + 1), _TOP + (row + 1) * _ROW - 3), fill=colour)
    axis = _TOP + _ROW * len(labels) + 4
    draw.line((_LEFT, axis, _WIDTH - 20, axis), fill="black")
    for t in ticks:
        draw.text((_LEFT + t * scale, axis + 6), _clock(t), fill="black", anchor="ma")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}" if m < 60 else f"{m // 60}:{m % 60:02d}:{s:02d}"
