"""The daemon serves committed versions compiled (``server.compiled``, service/compiling.py).

A real daemon (tiny preset) on loopback. The default learner's versions are served as their head over
their base: the frozen image encoder is compiled once into ``bases/<digest>`` and every later version
is its head, swapped in without compiling, answering as its learner does; a restart loads the base
instead of building it again, and builds again what was deleted. Strategies without a statistics head
or with a network of their own (cign, mmcl), and ``server.compiled: false``, serve the hybrid path and
write nothing.
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
from service.serving import HEAD_INT8_RUNNER, HEAD_RUNNER
from tests.service.conftest import Running, examples, make_config, task_data

if TYPE_CHECKING:
    from model.backbone import TriModalBackbone

BASE_FILES = {"base.json", "image.onnx"}
SCORE_BOUND = 1e-4
"""The base's graph and the learner's encoder compute the same sums in another order: float32 rounding only."""


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


def _bases(root: Path) -> dict[str, set[str]]:
    """``{digest: files}`` of the bases kept under ``root``."""
    folder = root / "bases"
    return {b.name: {p.name for p in b.iterdir()} for b in folder.iterdir()} if folder.is_dir() else {}


def _wait_served_fast(d: Running, version: int, timeout: float = 300.0, runner: str = HEAD_RUNNER) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        served = d.server.daemon.served
        if served.number == version and served.runner == runner:
            return
        time.sleep(0.05)
    raise AssertionError(f"version {version} was not served by {runner} within {timeout:g} s")


def _answers_match(d: Running, msgs: list[mcil_pb2.Sample], samples: list) -> mcil_pb2.ClassifyResponse:
    got = d.client.classify(msgs, top_k=4)
    want = d.server.daemon.served.learner.predict(samples, top_k=4)  # the hybrid path of the same version
    for result, expected in zip(got.results, want):
        assert [c.name for c in result.classes] == list(expected.classes)
        assert max(abs(c.score - s) for c, s in zip(result.classes, expected.scores)) <= SCORE_BOUND
        assert result.unknown == expected.unknown
    return got


def test_versions_are_served_as_their_head_over_a_base_compiled_once(
        start_daemon: Callable[..., Running], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(tmp_path, server__compiled="true")
    d = start_daemon(config)
    msgs, samples = _probe()
    assert _learn(d, ["red", "green"], 0) == 1
    _wait_served_fast(d, 1)  # the first version over this base waits for the base to be built
    bases = _bases(tmp_path)
    assert list(bases.values()) == [BASE_FILES]
    built = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "bases").rglob("*")}
    first = _answers_match(d, msgs, samples)
    assert _learn(d, ["blue", "white"], 2) == 2
    _wait_served_fast(d, 2)  # its head, swapped in: nothing is compiled
    assert d.client.model_info().runner == HEAD_RUNNER
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "bases").rglob("*")} == built
    assert _files(d, 1) == _files(d, 2) == set()
    _answers_match(d, msgs, samples)
    assert d.client.rollback(1).version == 1 and d.server.daemon.served.runner == HEAD_RUNNER  # at once
    d.stop()

    old = tmp_path / "compiled" / "v0001"  # graphs an earlier release compiled for version 1
    old.mkdir(parents=True)
    (old / "compiled.json").write_text("{}")
    with caplog.at_level(logging.INFO, logger="service.compiling"):
        again = start_daemon(config)
    assert again.server.daemon.served.runner == HEAD_RUNNER  # at start, from the base on disk
    assert not old.exists()
    assert not any("export.base" in r.getMessage() for r in caplog.records)
    assert [c.name for c in again.client.classify(msgs, top_k=4).results[0].classes] == [
        c.name for c in first.results[0].classes]
    again.stop()

    shutil.rmtree(tmp_path / "bases")  # a cache: a start without it builds the base again
    third = start_daemon(config)
    _wait_served_fast(third, 1)
    assert _bases(tmp_path) == bases and third.client.model_info().runner == HEAD_RUNNER


def test_int8_serves_once_enough_pictures_are_kept_and_again_at_start(
        start_daemon: Callable[..., Running], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``server.base_precision: int8``: a version is served over fp32 at once, then over the base's int8
    image graph once the held-out pictures kept reach ``MIN_PICTURES`` (built once, in a child)."""
    from export.int8 import MIN_EXAMPLES

    config = make_config(tmp_path, server__compiled="true", server__base_precision="int8")
    d = start_daemon(config)
    msgs, samples = _probe()

    def learn(names: list[str], per_class: int, held: int, first_index: int) -> int:
        data = task_data(names, per_class=per_class, first_index=first_index)
        flags = [i % per_class < held for i in range(len(data))]  # make_dataset: class by class
        job = d.client.wait(d.client.learn(names, examples(data, flags)).job_id, timeout=300)
        assert job.state == mcil_pb2.JOB_STATE_SUCCEEDED, job.message
        return int(job.committed_version)

    assert learn(["red", "green"], 6, 2, 0) == 1  # 4 pictures kept: too few to calibrate on
    _wait_served_fast(d, 1)
    time.sleep(0.5)
    assert d.client.model_info().runner == HEAD_RUNNER and set(_bases(tmp_path)) == {d.server.daemon.served.compiled.base.digest}  # type: ignore[union-attr]
    assert learn(["blue", "white"], 12, 7, 2) == 2 and 4 + 14 >= MIN_EXAMPLES
    _wait_served_fast(d, 2, runner=HEAD_INT8_RUNNER)
    digest = d.server.daemon.served.compiled.base.digest  # type: ignore[union-attr]
    assert _bases(tmp_path) == {digest: BASE_FILES, f"{digest}.int8": {"int8.json", "image.onnx"}}
    got = d.client.classify(msgs, top_k=4)
    want = d.server.daemon.served.learner.predict(samples, top_k=4)
    # close to the learner's answers, not equal (docs/benchmarks.md): the same best class here
    assert [r.classes[0].name for r in got.results] == [w.classes[0] for w in want]
    d.stop()
    with caplog.at_level(logging.INFO, logger="service.compiling"):
        again = start_daemon(config)
    assert again.client.model_info().runner == HEAD_INT8_RUNNER  # at start, from the graph on disk
    assert not any("export.int8" in r.getMessage() or "int8 image graph of" in r.getMessage() for r in caplog.records)
    again.stop()
    fp32 = start_daemon(make_config(tmp_path, server__compiled="true"))
    assert fp32.client.model_info().runner == HEAD_RUNNER  # the setting, not the files, decides
    fp32.stop()

    # a serving process without PyTorch (--light) takes the same graph (tiny's base has no audio
    # encoder, so only the choice of graph is checked here)
    from service.light_heads import HeadWatcher
    from serving.base import BaseGraphs

    base = BaseGraphs.load(tmp_path / "bases" / digest, threads=1)
    assert HeadWatcher(tmp_path, None, threads=1, precision="int8")._int8(base).precision == "int8"
    assert HeadWatcher(tmp_path, None, threads=1)._int8(base).precision == "fp32"
    (tmp_path / "bases" / f"{digest}.int8" / "image.onnx").write_bytes(b"damaged")
    assert HeadWatcher(tmp_path, None, threads=1, precision="int8")._int8(base).precision == "fp32"


@pytest.mark.parametrize("setting, strategy", [("false", "mcil"), ("true", "mcil-paper"), ("true", "cign"),
                                              ("true", "mmcl")])
def test_the_hybrid_path_serves_when_compiling_is_off_or_impossible(
        start_daemon: Callable[..., Running], tmp_path: Path, setting: str, strategy: str) -> None:
    d = start_daemon(make_config(tmp_path, server__compiled=setting, server__strategy=strategy))
    version = _learn(d, ["red", "green"], 0)
    time.sleep(2)  # a compile, had one been started, would be under way
    assert _files(d, version) == set() and _bases(tmp_path) == {}
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
