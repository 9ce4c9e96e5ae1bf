"""Floods and bad bytes against a real daemon on loopback: stalled uploads never starve Classify or
health, malformed messages and hostile ids are client errors (never INTERNAL), and state is unchanged."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service._proto import mcil_pb2, mcil_pb2_grpc

from .conftest import Running, examples, make_config, task_data

pytestmark = pytest.mark.integration


def _stalled_upload(stop: threading.Event, name: str) -> Iterator[mcil_pb2.LearnNewClassesRequest]:
    yield mcil_pb2.LearnNewClassesRequest(header=mcil_pb2.LearnHeader(request_id=name, class_names=[name]))
    stop.wait(30)


def test_stalled_uploads_are_capped_and_ended_and_classify_stays_answered(
        start_daemon: Callable[..., Running], tmp_path: Path) -> None:
    d = start_daemon(make_config(tmp_path, server__max_workers="4", server__max_open_streams="2",
                                 limits__upload_idle_seconds="1.5"))
    first = d.client.learn(["red"], examples(task_data(["red"], per_class=6)))
    assert d.client.wait(first.job_id).state == mcil_pb2.JOB_STATE_SUCCEEDED
    channel = grpc.insecure_channel(d.target)
    stub = mcil_pb2_grpc.ContinualLearnerStub(channel)
    stop = threading.Event()
    outcomes: dict[str, grpc.StatusCode] = {}

    def upload(name: str) -> None:
        try:
            stub.LearnNewClasses(_stalled_upload(stop, name), timeout=30)
        except grpc.RpcError as exc:
            outcomes[name] = exc.code()

    threads = [threading.Thread(target=upload, args=(f"stall{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while d.server.daemon.streams.open_count < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert d.server.daemon.streams.open_count == 2
        upload("one-too-many")  # refused at once: the cap
        assert outcomes["one-too-many"] == grpc.StatusCode.RESOURCE_EXHAUSTED
        probe = mcil_pb2.ClassifyRequest(samples=[examples(task_data(["red"], per_class=1))[0].sample], top_k=1)
        for _ in range(5):  # two of four threads stall; the others answer (a starved call would time out)
            assert stub.Classify(probe, timeout=20).model_version == 1
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=20)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        for t in threads:
            t.join(timeout=15)
        assert outcomes["stall0"] == outcomes["stall1"] == grpc.StatusCode.CANCELLED  # the idle timeout
        deadline = time.monotonic() + 10
        while d.server.daemon.streams.open_count and time.monotonic() < deadline:
            time.sleep(0.05)  # the handlers return just after the client hears CANCELLED
        assert d.server.daemon.streams.open_count == 0
    finally:
        stop.set()
        channel.close()


@pytest.mark.parametrize(("method", "raw"), [
    ("Classify", b"\x0a\x05\x0a"),  # a length-delimited field cut short
    ("GetJob", b"\x0a\x02\xff\xfe"),  # a string field that is not UTF-8
    ("Rollback", b"\x08"),  # a varint with no value
])
def test_malformed_messages_are_invalid_argument(start_daemon: Callable[..., Running], tmp_path: Path,
                                                 method: str, raw: bytes) -> None:
    d = start_daemon(make_config(tmp_path))
    with grpc.insecure_channel(d.target) as channel:
        call = channel.unary_unary(f"/mcil.v1.ContinualLearner/{method}")
        with pytest.raises(grpc.RpcError) as info:
            call(raw, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request: not a valid message" in info.value.details()


def test_a_malformed_upload_message_is_invalid_argument_and_stores_nothing(
        start_daemon: Callable[..., Running], tmp_path: Path) -> None:
    d = start_daemon(make_config(tmp_path))
    header = mcil_pb2.LearnNewClassesRequest(
        header=mcil_pb2.LearnHeader(request_id="r", class_names=["red"])).SerializeToString()
    with grpc.insecure_channel(d.target) as channel:
        call = channel.stream_unary("/mcil.v1.ContinualLearner/LearnNewClasses")
        with pytest.raises(grpc.RpcError) as info:
            call(iter([header, b"\x12\x03\x0a"]), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not list((tmp_path / "jobs").iterdir()) and not list((tmp_path / "held_out").iterdir())


def test_job_ids_are_length_checked_before_use(start_daemon: Callable[..., Running], tmp_path: Path) -> None:
    d = start_daemon(make_config(tmp_path))
    for call in (d.client.get_job, d.client.cancel_job):
        with pytest.raises(grpc.RpcError) as info:
            call("x" * 100_000)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(info.value.details()) < 200 and "job_id" in info.value.details()
    reply = d.client.learn(["red"], examples(task_data(["red"], per_class=6)))
    assert d.client.wait(reply.job_id).state == mcil_pb2.JOB_STATE_SUCCEEDED
