"""``python -m export.compiled``: what the daemon runs in a child process after each commit.

Its success path (graphs that load against the daemon's own learner) is exercised by the daemon
itself in tests/service/test_compiled_serving.py; here, how it fails and how it ends."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from model.learner import Learner, create_learner
from model.learner_config import LearnerConfig
from model.synthetic import make_dataset
from model.training import TrainingConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Learner]:
    learner = create_learner("tiny", "mcil", config=replace(LearnerConfig(),
                                                            training=TrainingConfig(epochs=1, min_steps=2)))
    learner.learn_task(make_dataset(["a", "b"], 6, seed=0), ["a", "b"])
    directory = tmp_path_factory.mktemp("version")
    learner.save(directory)
    return directory, learner


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "export.compiled", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def test_a_folder_that_is_not_a_version_fails_with_its_name(tmp_path: Path) -> None:
    done = _run(str(tmp_path), "--out", str(tmp_path / "graphs"))
    assert done.returncode == 1 and str(tmp_path) in done.stderr and "Traceback" not in done.stderr


def test_the_child_ends_when_the_process_it_belongs_to_is_gone(saved: tuple[Path, Learner], tmp_path: Path) -> None:
    directory, _ = saved
    started = time.monotonic()
    done = _run(str(directory), "--out", str(tmp_path / "graphs"), "--parent-pid", "1")  # not its parent
    assert done.returncode == 3 and time.monotonic() - started < 60
    assert not (tmp_path / "graphs").exists()
