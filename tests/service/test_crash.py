"""Crash safety: kill -9 during a job, SIGTERM during a job (real subprocess daemons), damaged versions."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Callable

import pytest

from service._proto import mcil_pb2
from service.chaos.process import DaemonProcess

from .conftest import Running, examples, make_config, task_data

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def training_daemon(state_dir: Path) -> DaemonProcess:
    """A real daemon; every task trains (the default, mcil, trains its first task only), so kills land in
    training."""
    return DaemonProcess(state_dir, settings={"server.strategy": "mcil-paper"})


def wait_for_training(daemon: DaemonProcess, job_id: str) -> None:
    for job in daemon.client.watch(job_id, timeout=120):
        if job.phase == mcil_pb2.JOB_PHASE_TRAINING and job.step >= 1:
            return
        assert job.state in (mcil_pb2.JOB_STATE_QUEUED, mcil_pb2.JOB_STATE_RUNNING), job.message
    raise AssertionError("the job never trained")


def test_kill_9_and_sigterm_during_jobs_leave_the_last_committed_version(tmp_path: Path) -> None:
    state = tmp_path / "state"
    probe_data = task_data(["red", "green"], per_class=2, seed=7)
    probe = examples(probe_data)
    daemon = training_daemon(state)
    try:
        first = daemon.client.learn(["red", "green"], examples(task_data(["red", "green"], per_class=5)))
        assert daemon.client.wait(first.job_id).state == mcil_pb2.JOB_STATE_SUCCEEDED
        answer = daemon.client.classify([e.sample for e in probe], top_k=2)
        assert answer.model_version == 1

        # A long job, killed without warning in the middle of training.
        big = daemon.client.learn(["blue", "yellow"], examples(task_data(["blue", "yellow"], per_class=150,
                                                                         first_index=2)))
        wait_for_training(daemon, big.job_id)
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(30)
    finally:
        daemon.close()

    daemon = training_daemon(state)
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
        wait_for_training(daemon, third.job_id)
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(60) == 0
    finally:
        daemon.close()

    daemon = training_daemon(state)
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
