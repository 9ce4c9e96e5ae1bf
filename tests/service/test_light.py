"""The light daemon: a serving process without PyTorch, the daemon as its learner child.

A real daemon (``lite`` on the CPU, ``server.light`` left to its default) on loopback runs light: it
learns through its child, answers Classify with the version just committed at once, from the
committed version's head as the learner that committed it answers, never loads PyTorch (its memory
maps no libtorch; the learner's does; its log says so from its ``sys.modules`` at each swap), serves
its own Classify series and its learner's on one ``/metrics`` page, puts its learner to sleep when
nothing needs it and wakes it for the next call that does, keeps answering while its learner is
killed, starts the learner again, and serves the next commit.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from model.samples import Sample
from service._proto import mcil_pb2
from service.chaos.process import DaemonProcess
from service.client import sample_from_arrays
from service.learner_child import free_port
from tests.export.conftest import skip_unless_preset
from tests.service.conftest import examples, task_data


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _maps_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def _until(what: str, check: "object", timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception:  # noqa: BLE001 - not yet
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout:g} s")


def test_classify_comes_from_a_process_without_pytorch_that_outlives_its_learner(tmp_path: Path) -> None:
    from model.learner import Learner

    skip_unless_preset("lite")
    state = tmp_path / "state"
    metrics_port = free_port()
    d = DaemonProcess(state, preset="lite", settings={"server.device": "cpu",  # server.light: its default
                                                      "server.metrics_listen": f"127.0.0.1:{metrics_port}",
                                                      "server.learner_idle_seconds": "3"},
                      start_timeout=300, log_path=tmp_path / "light.log")
    try:
        client = d.client
        _until("the learner listens", lambda: client.model_info().preset == "lite", 300)
        learner_pid = _children(d.pid)[0]
        reply = client.learn(["red", "green"], examples(task_data(["red", "green"], per_class=6)))
        assert client.wait(reply.job_id, timeout=600).state == mcil_pb2.JOB_STATE_SUCCEEDED
        assert not _maps_torch(d.pid) and _maps_torch(learner_pid)  # PyTorch lives in the learner only
        data = task_data(["red", "green"], per_class=2, seed=9)
        probe = [Sample(image=s.image, audio=s.audio, sample_rate=s.sample_rate) for s in data]
        probe += [Sample(image=data[0].image), Sample(audio=data[1].audio, sample_rate=16000)]
        msgs = [sample_from_arrays(s.image, s.audio, s.sample_rate) for s in probe]
        log = d.log_path.read_text(errors="replace")
        assert "light: Classify from a process without PyTorch" in log and "the learner child of a light daemon" in log
        assert client.classify(msgs, top_k=2).model_version == 1  # at once: the learner answers until the head is here
        _until("version 1 is served here", lambda: "service.light_heads: serving version 1" in d.log_tail(100), 300)

        # Nothing needs the learner for 3 s (Classify never does): it sleeps, Classify answers, and
        # /metrics still shows its series as they were (but for its process's).
        _until("the learner sleeps", lambda: not _children(d.pid), 60)
        assert not Path(f"/proc/{learner_pid}").exists()
        assert client.classify(msgs, top_k=2).model_version == 1
        page = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        families = [f.name for f in text_string_to_metric_families(page)]
        assert len(families) == len(set(families))  # each family from one process only
        series = {f.name: f for f in text_string_to_metric_families(page)}
        assert series["mcil_model_version"].samples[0].value == 1  # the learner's series ...
        served = {s.labels["path"]: s.value for s in series["mcil_classify_samples"].samples if s.name.endswith("_total")}
        assert served.get("av", 0) >= 1  # ... and the serving process's, on one page
        assert "process_resident_memory_bytes" in series  # the serving process's own ...
        assert "mcil_learner_process_resident_memory_bytes" not in series  # ... the learner's: there is none now
        want = Learner.load(state / "versions" / "000001").predict(probe, top_k=2)
        got = client.classify(msgs, top_k=2).results
        for result, expected in zip(got, want):
            assert [c.name for c in result.classes] == list(expected.classes) and result.unknown == expected.unknown
            assert max(abs(c.score - s) for c, s in zip(result.classes, expected.scores)) <= 1e-4

        assert client.model_info().version == 1  # a call that needs the learner starts it and waits for it
        learner_pid = _children(d.pid)[0]
        os.kill(learner_pid, signal.SIGKILL)  # the learner dies: Classify goes on
        assert client.classify(msgs, top_k=2).model_version == 1
        _until("the learner is started again", lambda: _children(d.pid) and _children(d.pid)[0] != learner_pid
               and client.model_info().version == 1, 300)
        reply = client.learn(["blue"], examples(task_data(["blue"], per_class=6, first_index=2)))
        assert client.wait(reply.job_id, timeout=600).state == mcil_pb2.JOB_STATE_SUCCEEDED
        assert client.classify(msgs, top_k=3).model_version == 2
        _until("version 2 is served here", lambda: "service.light_heads: serving version 2" in d.log_tail(100), 30)
        assert not _maps_torch(d.pid)
        swaps = [line for line in d.log_tail(400).splitlines() if "service.light_heads: serving version" in line]
        assert len(swaps) == 2 and all(line.endswith("PyTorch not loaded") for line in swaps)  # its sys.modules
        second = _children(d.pid)  # [] if it sleeps already
        assert d.terminate() == 0  # a graceful stop stops the learner too
        _until("the learner has stopped", lambda: not any(Path(f"/proc/{pid}").exists() for pid in second), 60)
    finally:
        d.close()


def test_a_learner_that_cannot_start_stops_the_serving_process_with_its_status(tmp_path: Path) -> None:
    """What only the learner can find (its state directory in use by another daemon) is not retried
    forever: the serving process stops with the learner's status."""
    import fcntl

    skip_unless_preset("lite")
    state = tmp_path / "state"
    state.mkdir()
    with open(state / "LOCK", "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # another daemon holds it
        d = DaemonProcess(state, preset="lite", settings={"server.light": "true"}, start_timeout=120,
                          log_path=tmp_path / "light.log")
        try:
            assert d.wait_exit(120), "the serving process did not stop"
            assert d.proc.returncode == 1
            assert "in use by another daemon" in d.log_tail(100) and "the serving process stops" in d.log_tail(100)
        finally:
            d.close()


def test_what_light_cannot_serve_is_refused_by_name(tmp_path: Path) -> None:
    from model.strategies import STRATEGIES
    from service.errors import ConfigError
    from service.light import LightServer
    from service.light_mode import HEAD_STRATEGIES, LIGHT_PRESETS
    from tests.service.conftest import make_config

    served_as_heads = {name for name, s in STRATEGIES.items()
                       if s.head_kind in ("analytic", "class-means") and s.head_features == "frozen"}
    assert set(HEAD_STRATEGIES) == served_as_heads
    for field, overrides in (("server.preset", {"server__preset": "tiny"}),
                             ("server.strategy", {"server__preset": LIGHT_PRESETS[0], "server__strategy": "cign"}),
                             ("server.compiled", {"server__preset": LIGHT_PRESETS[0], "server__compiled": "false"})):
        with pytest.raises(ConfigError) as refused:
            LightServer(make_config(tmp_path, **overrides))
        assert refused.value.field == field


def test_a_base_device_this_onnxruntime_cannot_reach_is_refused_before_anything_starts(tmp_path: Path) -> None:
    import onnxruntime as ort

    from service.errors import ConfigError
    from service.light import LightServer
    from service.light_mode import LIGHT_PRESETS
    from tests.service.conftest import make_config

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("ONNX Runtime's CUDA provider is installed here")
    with pytest.raises(ConfigError) as refused:
        LightServer(make_config(tmp_path / "state", server__preset=LIGHT_PRESETS[0], server__compiled="true",
                                server__base_device="cuda"))
    assert refused.value.field == "server.base_device" and "onnxruntime-gpu" in refused.value.problem
    assert not (tmp_path / "state").exists()  # the state directory untouched
