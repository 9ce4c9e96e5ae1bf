"""The daemon serves committed versions from compiled graphs (``server.compiled``, service/compiling.py).

A real daemon (tiny preset) on loopback: a committed version is compiled in the background, its
graphs land in ``compiled/v000N`` and it then answers Classify from them, with the answers of its
learner; a restart loads the graphs instead of compiling again, and compiles again what was
deleted; strategies without a statistics head or with a network of their own (cign, mmcl), and
``server.compiled: false``, serve the hybrid path and write no graphs.
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pytest

from model.synthetic import make_dataset
from service._proto import mcil_pb2
from service.client import sample_from_arrays
from service.serving import COMPILED_RUNNER
from tests.service.conftest import Running, examples, make_config, task_data

if TYPE_CHECKING:
    from model.backbone import TriModalBackbone

GRAPH_FILES = {"compiled.json", "compiled.av.onnx", "compiled.visual.onnx", "compiled.audio.onnx"}
SCORE_BOUND = 1e-4
"""Graphs and learner compute the same sums in another order (dense experts): float32 rounding only."""


def _learn(d: Running, names: list[str], first_index: int) -> int:
    reply = d.client.learn(names, examples(task_data(names, per_class=6, first_index=first_index)))
    job = d.client.wait(reply.job_id, timeout=300)
    assert job.state == mcil_pb2.JOB_STATE_SUCCEEDED, job.message
    return int(job.committed_version)


def _probe() -> tuple[list[mcil_pb2.Sample], list]:
    data = make_dataset(["p0", "p1", "p2", "p3"], 1, seed=7)
    msgs = [sample_from_arrays(s.image, s.audio, s.sample_rate) for s in data]
    msgs += [sample_from_arrays(data[0].image), sample_from_arrays(audio=data[1].audio, sample_rate=16000)]
    from model.samples import Sample

    samples = [Sample(image=s.image, audio=s.audio, sample_rate=s.sample_rate) for s in data]
    samples += [samples[0].only("visual"), samples[1].only("audio")]
    return msgs, samples


def _files(d: Running, version: int) -> set[str]:
    directory = d.server.daemon.store.root / "compiled" / f"v{version:04d}"
    return {p.name for p in directory.iterdir()} if directory.is_dir() else set()


def _wait_compiled(d: Running, version: int, timeout: float = 300.0) -> None:
    # Learning a task trains nothing by default, so a second commit follows the first at once and waits
    # for the first one's compile: two compiles of ~15 s each on a quiet 2-core machine.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        served = d.server.daemon.served
        if served.number == version and served.compiled is not None:
            return
        time.sleep(0.2)
    raise AssertionError(f"version {version} was not served compiled within {timeout:g} s")


def test_a_committed_version_is_served_from_its_graphs_and_reloaded_after_a_restart(
        start_daemon: Callable[..., Running], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(tmp_path, server__compiled="true")
    d = start_daemon(config)
    assert _learn(d, ["red", "green"], 0) == 1
    assert _learn(d, ["blue", "white"], 2) == 2
    _wait_compiled(d, 2)
    assert _files(d, 2) == GRAPH_FILES
    served = d.server.daemon.served
    assert served.compiled is not None and d.client.model_info().runner == COMPILED_RUNNER
    msgs, samples = _probe()
    got = d.client.classify(msgs, top_k=4)
    want = served.learner.predict(samples, top_k=4)  # the hybrid path of the same version
    for result, expected in zip(got.results, want):
        assert [c.name for c in result.classes] == list(expected.classes)
        assert max(abs(c.score - s) for c, s in zip(result.classes, expected.scores)) <= SCORE_BOUND
        assert result.unknown == expected.unknown
    d.stop()

    with caplog.at_level(logging.INFO, logger="service.serving"):
        again = start_daemon(config)
    assert again.server.daemon.served.compiled is not None
    assert again.client.model_info().runner == COMPILED_RUNNER
    assert not any("compiled the version" in r.getMessage() for r in caplog.records)  # loaded, not rebuilt
    assert [c.name for c in again.client.classify(msgs, top_k=4).results[0].classes] == [
        c.name for c in got.results[0].classes]
    again.stop()

    shutil.rmtree(tmp_path / "compiled")  # a cache: a start without it compiles again
    third = start_daemon(config)
    _wait_compiled(third, 2)
    assert _files(third, 2) == GRAPH_FILES and third.client.model_info().runner == COMPILED_RUNNER


@pytest.mark.parametrize("setting, strategy", [("false", "mcil"), ("true", "mcil-paper"), ("true", "cign"),
                                              ("true", "mmcl")])
def test_the_hybrid_path_serves_when_compiling_is_off_or_impossible(
        start_daemon: Callable[..., Running], tmp_path: Path, setting: str, strategy: str) -> None:
    d = start_daemon(make_config(tmp_path, server__compiled=setting, server__strategy=strategy))
    version = _learn(d, ["red", "green"], 0)
    time.sleep(2)  # a compile, had one been started, would be under way
    assert _files(d, version) == set()
    assert d.server.daemon.served.compiled is None
    assert d.client.model_info().runner == "pytorch"
    msgs, _ = _probe()
    assert len(d.client.classify(msgs).results) == len(msgs)


def test_graphs_that_fail_on_valid_input_are_left_aside_and_the_learner_answers(
        tiny_backbone: "TriModalBackbone", caplog: pytest.LogCaptureFixture) -> None:
    from dataclasses import replace as dc_replace

    from export.compiled import CompiledVersion
    from model.learner import create_learner
    from model.learner_config import LearnerConfig
    from model.training import TrainingConfig
    from service.serving import ServedVersion

    learner = create_learner("tiny", "mcil", backbone=copy.deepcopy(tiny_backbone),  # the fixture stays fresh
                             config=dc_replace(LearnerConfig(), training=TrainingConfig(epochs=1, min_steps=2)))
    learner.learn_task(make_dataset(["a", "b"], 6, seed=0), ["a", "b"])
    compiled = CompiledVersion.compile(learner)
    compiled.sessions["av"] = compiled.sessions["visual"]  # wrong inputs for the av path: fails when run
    served = ServedVersion(1, learner, None, None, compiled)
    _, samples = _probe()
    with caplog.at_level(logging.ERROR, logger="service.serving"):
        got = served.predict(samples, top_k=2)
        again = served.predict(samples, top_k=2)
    assert got == again == learner.predict(samples, top_k=2)
    assert compiled.broken and sum("compiled graphs failed" in r.getMessage() for r in caplog.records) == 1
