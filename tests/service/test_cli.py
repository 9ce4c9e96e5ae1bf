"""The quick start through the ``mcil`` CLI: make samples, learn two tasks from files, classify, roll back."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from service._proto import mcil_pb2
from service.cli import main

from .conftest import Running, make_config

pytestmark = pytest.mark.integration


def test_quick_start(start_daemon: Callable[..., Running], tmp_path: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:
    samples = tmp_path / "samples"
    assert main(["make-samples", str(samples), "--per-class", "6"]) == 0
    assert len(list((samples / "red" / "images").glob("*.png"))) == 6
    assert len(list((samples / "red" / "audio").glob("*.wav"))) == 6
    d = start_daemon(make_config(tmp_path / "state"))
    target = ["--target", d.target]
    capsys.readouterr()

    def learn(*names: str) -> pytest.CaptureResult[str]:
        args = [*target, "learn", "--quiet"]
        for name in names:
            args += ["--class", name, "--images", str(samples / name / "images"),
                     "--audio", str(samples / name / "audio")]
        assert main(args) == 0
        return capsys.readouterr()

    out = learn("red", "green").out
    assert "succeeded" in out and "serving version 1" in out
    second = learn("blue")
    assert "serving version 2" in second.out
    assert "warning" not in second.err  # one class, but not the first task

    assert main([*target, "classify", str(samples / "test" / "blue.png"), str(samples / "test" / "blue.wav")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("version 2, ")
    assert {line.split()[-1] for line in out.splitlines()[1:]} == {"red", "green", "blue"}

    assert main([*target, "classify", str(samples / "test" / "red.wav")]) == 0
    assert "audio path" in capsys.readouterr().out

    assert main([*target, "status"]) == 0
    out = capsys.readouterr().out
    assert "version 2" in out and "task 1: red, green" in out and "task 2: blue" in out

    assert main([*target, "rollback", "1"]) == 0
    assert "serving version 1: red, green" in capsys.readouterr().out
    assert main([*target, "versions"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("*") and lines[1].startswith(" ")  # version 1 is served

    assert main([*target, "rollback", "7"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    assert main([*target, "learn", "--class", "x", "--images", str(tmp_path / "nowhere")]) == 2


def test_learn_warns_when_the_first_task_has_one_class(start_daemon: Callable[..., Running], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    samples = tmp_path / "samples"
    assert main(["make-samples", str(samples), "--per-class", "6"]) == 0
    d = start_daemon(make_config(tmp_path / "state"))
    capsys.readouterr()
    assert main(["--target", d.target, "learn", "--quiet", "--class", "red", "--images", str(samples / "red" / "images"),
                 "--audio", str(samples / "red" / "audio")]) == 0
    captured = capsys.readouterr()
    assert "serving version 1" in captured.out  # accepted and learned all the same
    assert captured.err.count("warning: the first task teaches a single class") == 1  # said once, not per update
    job_id = captured.out.split()[1].rstrip(":")
    assert main(["--target", d.target, "job", job_id]) == 0
    assert "teach at least two classes in the first task" in capsys.readouterr().err


def test_a_warning_found_when_a_job_starts_is_printed_once_by_the_follower(
        start_daemon: Callable[..., Running], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    samples = tmp_path / "samples"
    assert main(["make-samples", str(samples), "--per-class", "6"]) == 0
    # Jobs that stay running: every task of mcil-paper trains (the default, mcil, trains nothing).
    d = start_daemon(make_config(tmp_path / "state", learning__epochs="400", server__strategy="mcil-paper"))
    target = ["--target", d.target]

    def submit(*names: str) -> str:
        args = [*target, "learn", "--quiet", "--no-wait"]
        for name in names:
            args += ["--class", name, "--images", str(samples / name / "images"),
                     "--audio", str(samples / name / "audio")]
        capsys.readouterr()
        assert main(args) == 0
        return capsys.readouterr().out.split()[1].rstrip(":")

    ahead, behind = submit("red", "green"), submit("blue")

    def cancel_ahead_then_behind() -> None:
        time.sleep(1.0)  # let the follower below attach while "blue" still waits behind "red, green"
        d.client.cancel_job(ahead)
        while d.client.get_job(behind).phase != mcil_pb2.JOB_PHASE_TRAINING:
            time.sleep(0.05)
        d.client.cancel_job(behind)

    worker = threading.Thread(target=cancel_ahead_then_behind, daemon=True)
    worker.start()
    assert main([*target, "job", behind, "--watch"]) == 1  # followed from queued to cancelled
    worker.join(timeout=60)
    captured = capsys.readouterr()
    assert "cancelled" in captured.out
    # Accepted behind a two-class task, "blue" became the first task when that one was cancelled.
    assert captured.err.count("warning: the first task teaches a single class") == 1


def test_report_draws_the_versions(start_daemon: Callable[..., Running], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    samples = tmp_path / "samples"
    assert main(["make-samples", str(samples), "--per-class", "6"]) == 0
    d = start_daemon(make_config(tmp_path / "state"))
    target = ["--target", d.target]
    assert main([*target, "report", "--out", str(tmp_path / "r.svg")]) == 2  # nothing learned yet
    for names in (["red", "green"], ["blue"]):
        args = [*target, "learn", "--quiet"]
        for name in names:
            args += ["--class", name, "--images", str(samples / name / "images"), "--audio", str(samples / name / "audio")]
        assert main(args) == 0
    for name in ("report.svg", "report.html"):
        assert main([*target, "report", "--out", str(tmp_path / name)]) == 0
        text = (tmp_path / name).read_text()
        assert text.count("<rect x=") >= 3 * 3  # three paths x (1 + 2) matrix cells
        assert "Forgetting over versions" in text and "<polyline" in text and "v2 *" in text
    versions = d.client.list_versions().versions
    assert [len(v.metrics.paths["av"].task_accuracy) for v in versions] == [1, 2]  # rows of the matrix
    assert "every figure" in (tmp_path / "report.html").read_text().lower()
