"""Crash safety: kill -9 during a job, SIGTERM during a job (real subprocess daemons), damaged versions."""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from service._proto import mcil_pb2
from service.client import Client

from .conftest import Running, examples, make_config, task_data

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


class Subprocess:
    """``python -m service serve`` on a free loopback port, tiny preset."""

    def __init__(self, state_dir: Path) -> None:
        args = [sys.executable, "-m", "service", "serve", "--preset", "tiny", "--state-dir", str(state_dir),
                "--listen", "127.0.0.1:0", "--metrics-listen", "none", "--log-level", "WARNING",
                "--set", "learning.epochs=3", "--set", "learning.min_steps=0", "--set", "learning.batch_size=8",
                "--set", "learning.min_examples_per_class=4",
                # Every task trains (the default, mcil, trains its first task only): kills land in training.
                "--set", "server.strategy=mcil-paper"]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.port = self._read_port(timeout=120)
        self.client = Client(f"127.0.0.1:{self.port}", timeout=60)

    def _read_port(self, timeout: float) -> int:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 1.0)
            if ready:
                line = self.proc.stdout.readline().decode()
                if line.startswith("mcild listening on port "):
                    return int(line.rsplit(" ", 1)[1])
                if not line and self.proc.poll() is not None:
                    break
        self.proc.kill()
        err = self.proc.stderr.read().decode() if self.proc.stderr else ""
        raise AssertionError(f"the daemon did not start:\n{err}")

    def wait_for_training(self, job_id: str) -> None:
        for job in self.client.watch(job_id, timeout=120):
            if job.phase == mcil_pb2.JOB_PHASE_TRAINING and job.step >= 1:
                return
            assert job.state in (mcil_pb2.JOB_STATE_QUEUED, mcil_pb2.JOB_STATE_RUNNING), job.message
        raise AssertionError("the job never trained")

    def close(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def test_kill_9_and_sigterm_during_jobs_leave_the_last_committed_version(tmp_path: Path) -> None:
    state = tmp_path / "state"
    probe_data = task_data(["red", "green"], per_class=2, seed=7)
    probe = examples(probe_data)
    daemon = Subprocess(state)
    try:
        first = daemon.client.learn(["red", "green"], examples(task_data(["red", "green"], per_class=5)))
        assert daemon.client.wait(first.job_id).state == mcil_pb2.JOB_STATE_SUCCEEDED
        answer = daemon.client.classify([e.sample for e in probe], top_k=2)
        assert answer.model_version == 1

        # A long job, killed without warning in the middle of training.
        big = daemon.client.learn(["blue", "yellow"], examples(task_data(["blue", "yellow"], per_class=150,
                                                                         first_index=2)))
        daemon.wait_for_training(big.job_id)
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(30)
    finally:
        daemon.close()

    daemon = Subprocess(state)
    try:
        c = daemon.client
        again = c.classify([e.sample for e in probe], top_k=2)
        assert again.model_version == 1
        assert [[e.name for e in r.classes] for r in again.results] == \
            [[e.name for e in r.classes] for r in answer.results]
        job = c.get_job(big.job_id)
        assert job.state == mcil_pb2.JOB_STATE_FAILED and "interrupted" in job.message
        assert [v.version for v in c.list_versions().versions] == [1]
        assert not list((state / "versions").glob(".tmp-*"))

        # SIGTERM while training: a graceful stop (exit 0) that records the job as interrupted.
        third = c.learn(["blue", "yellow"], examples(task_data(["blue", "yellow"], per_class=150, first_index=2)))
        daemon.wait_for_training(third.job_id)
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(60) == 0
    finally:
        daemon.close()

    daemon = Subprocess(state)
    try:
        job = daemon.client.get_job(third.job_id)
        assert job.state == mcil_pb2.JOB_STATE_FAILED and "interrupted" in job.message
        assert daemon.client.list_versions().current_version == 1
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(60) == 0
    finally:
        daemon.close()


def test_a_damaged_version_is_skipped_at_start(start_daemon: Callable[..., Running], tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(tmp_path)
    d = start_daemon(config)
    for names, first in ((["red", "green"], 0), (["blue", "yellow"], 2)):
        reply = d.client.learn(names, examples(task_data(names, per_class=5, first_index=first)))
        assert d.client.wait(reply.job_id).state == mcil_pb2.JOB_STATE_SUCCEEDED
    d.stop()
    weights = tmp_path / "versions" / "000002" / "learned.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x55
    weights.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING):
        d2 = start_daemon(config)
    assert "version 2 is damaged and skipped" in caplog.text
    assert d2.client.list_classes().model_version == 1
    assert list(d2.client.list_classes().class_names) == ["red", "green"]
    assert [v.version for v in d2.client.list_versions().versions] == [1]
    reply = d2.client.learn(["blue", "yellow"], examples(task_data(["blue", "yellow"], per_class=5,
                                                                   first_index=2)))
    job = d2.client.wait(reply.job_id)
    assert job.state == mcil_pb2.JOB_STATE_SUCCEEDED and job.committed_version == 3
