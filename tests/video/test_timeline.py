"""Answers -> segments -> CSV, JSON, SVG and PNG, written whole or not at all."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from video.timeline import Answer, Timeline, check_outputs, write_outputs


def timeline() -> Timeline:
    t = Timeline(source="lesson.mp4", every=1.0)
    for i, (label, score) in enumerate([("clapping", 0.8), ("clapping", 0.6), ("unknown", 0.2), ("door", 0.9),
                                         ("door", 0.7), ("clapping", 0.5)]):
        t.add(Answer(time=float(i), label=label, score=score, unknown=label == "unknown", path="audio-visual",
                     nearest="door" if label == "unknown" else label))
    return t


def test_consecutive_equal_answers_merge_into_segments() -> None:
    segments = timeline().segments()
    assert [(s.label, s.start, s.end, s.steps) for s in segments] == [
        ("clapping", 0.0, 2.0, 2), ("unknown", 2.0, 3.0, 1), ("door", 3.0, 5.0, 2), ("clapping", 5.0, 6.0, 1)]
    assert segments[0].mean_score == pytest.approx(0.7)


def test_every_format_is_written(tmp_path: Path) -> None:
    paths = check_outputs([tmp_path / "t.csv", tmp_path / "t.json", tmp_path / "t.svg", tmp_path / "t.png"])
    write_outputs(timeline(), paths)
    rows = list(csv.DictReader((tmp_path / "t.csv").read_text().splitlines()))
    assert [r["class"] for r in rows] == ["clapping", "unknown", "door", "clapping"] and rows[2]["end"] == "5.000"
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["steps"] == 6 and len(data["segments"]) == 4 and data["answers"][2]["nearest"] == "door"
    svg = (tmp_path / "t.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<rect") == 4 and ">door</text>" in svg
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.json", "t.png", "t.svg"]  # no leftovers


@pytest.mark.parametrize(("name", "message"), [("t.txt", "write .csv, .json, .svg or .png"),
                                               ("missing/t.csv", "no folder")])
def test_an_out_that_cannot_be_written_is_refused_up_front(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_outputs([tmp_path / "ok.csv", tmp_path / name])


def test_a_failed_write_leaves_the_earlier_file_and_no_partial_one(tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    out.write_text("earlier")
    (tmp_path / ".t.json.partial").mkdir()  # the temporary name is taken: the write fails
    with pytest.raises(OSError):
        write_outputs(timeline(), [out])
    assert out.read_text() == "earlier"


def test_steps_missing_between_two_answers_split_a_segment() -> None:
    t = Timeline(source="camera", every=1.0)
    for time in (0.0, 1.0, 10.0):  # steps 2-9 dropped to keep up
        t.add(Answer(time=time, label="door", score=0.5, unknown=False, path="visual"))
    assert [(s.start, s.end, s.steps) for s in t.segments()] == [(0.0, 2.0, 2), (10.0, 11.0, 1)]


def test_the_picture_takes_any_source_name(tmp_path: Path) -> None:
    t = timeline()
    t.source = "rtsp://cam/<room 12>&\x01"
    write_outputs(t, [tmp_path / "t.svg"])
    import xml.dom.minidom

    xml.dom.minidom.parse(str(tmp_path / "t.svg"))  # well-formed
