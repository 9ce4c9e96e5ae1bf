"""A light daemon's Classify forwarded to its learner (service/light.py, ``forwarding_servicer``): a
learner that goes away under the call hands the call back to the serving process instead of failing it.

Both sides are real gRPC servers on loopback; the learner's side is a stand-in whose Classify answers,
or aborts as a dying process's channel does, or is not listening at all.
"""

from __future__ import annotations

from concurrent import futures
from typing import Any, Callable, Iterator

import grpc
import pytest

from service._proto import mcil_pb2, mcil_pb2_grpc
from service.errors import Unavailable
from service.learner_child import free_port
from service.light import forwarding_servicer

LOCAL = 1  # the version the serving process answers with
LEARNER = 2  # the version the learner answers with


class _Learner(mcil_pb2_grpc.ContinualLearnerServicer):
    def __init__(self, fail: grpc.StatusCode | None) -> None:
        self.fail = fail

    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - gRPC's name
        if self.fail is not None:
            context.abort(self.fail, "the learner goes away")
        return mcil_pb2.ClassifyResponse(model_version=LEARNER)

    def ListClasses(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - gRPC's name
        if self.fail is not None:
            context.abort(self.fail, "the learner goes away")
        return mcil_pb2.ListClassesResponse()


class _Child:
    """What ``forwarding_servicer`` reads of ``LearnerChild``: a token and a stub to the learner."""

    token = "learner-token"

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.asked: list[tuple[float | None, bool]] = []

    def stub(self, wait: float | None = None, wake: bool = True, is_active: Callable[[], bool] = lambda: True) -> Any:
        self.asked.append((wait, wake))
        return mcil_pb2_grpc.ContinualLearnerStub(self.channel)  # type: ignore[no-untyped-call]


def _classify(request: Any, to_learner: Callable[[], Any]) -> Any:
    """The shape of ``LightServer._classify``: the learner's answer, or the one served here."""
    try:
        return to_learner()
    except Unavailable:
        return mcil_pb2.ClassifyResponse(model_version=LOCAL)


def _server(servicer: Any, add: Callable[[Any, grpc.Server], None]) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    add(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@pytest.fixture
def serving() -> Iterator[Callable[[int], tuple[Any, _Child]]]:
    servers: list[grpc.Server] = []

    def start(learner_port: int) -> tuple[Any, _Child]:
        child = _Child(learner_port)
        server, port = _server(forwarding_servicer(child, _classify),  # type: ignore[arg-type]
                               mcil_pb2_grpc.add_ContinualLearnerServicer_to_server)
        servers.append(server)
        stub = mcil_pb2_grpc.ContinualLearnerStub(grpc.insecure_channel(f"127.0.0.1:{port}"))  # type: ignore[no-untyped-call]
        return stub, child

    yield start
    for server in servers:
        server.stop(0)


@pytest.mark.parametrize(("fail", "answered_by"), [(None, LEARNER), (grpc.StatusCode.UNAVAILABLE, LOCAL),
                                                   (grpc.StatusCode.CANCELLED, LOCAL)])
def test_classify_is_the_learner_s_unless_it_goes_away(serving: Any, fail: grpc.StatusCode | None,
                                                       answered_by: int) -> None:
    learner, port = _server(_Learner(fail), mcil_pb2_grpc.add_ContinualLearnerServicer_to_server)
    try:
        stub, child = serving(port)
        assert stub.Classify(mcil_pb2.ClassifyRequest(), timeout=10).model_version == answered_by
        assert child.asked == [(0.0, False)]  # never waits for, nor wakes, a learner that is not listening
    finally:
        learner.stop(0)


def test_a_learner_not_listening_at_all_hands_classify_back(serving: Any) -> None:
    stub, _ = serving(free_port())  # nothing listens there: the channel fails as a killed learner's does
    assert stub.Classify(mcil_pb2.ClassifyRequest(), timeout=10).model_version == LOCAL


def test_other_calls_get_the_learner_s_status(serving: Any) -> None:
    learner, port = _server(_Learner(grpc.StatusCode.UNAVAILABLE), mcil_pb2_grpc.add_ContinualLearnerServicer_to_server)
    try:
        stub, child = serving(port)
        with pytest.raises(grpc.RpcError) as failed:
            stub.ListClasses(mcil_pb2.ListClassesRequest(), timeout=10)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE  # only the learner answers these
        assert child.asked[0][1] is True  # and a sleeping learner is woken for them
    finally:
        learner.stop(0)
