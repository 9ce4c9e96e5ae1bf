"""Load against a real daemon: Classify through a learn + commit, through stalled uploads, and the
memory that the largest allowed images cost.

Each check measures Classify latency while nothing else happens (``idle``) and then under the load
it is about, in the same run, so the comparison is made on the same machine at the same moment.
"""

from __future__ import annotations

import io
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service._proto import mcil_pb2, mcil_pb2_grpc
from service.chaos.process import DaemonProcess


@dataclass
class Latency:
    calls: int
    errors: int
    p50_ms: float
    p99_ms: float


def _latency(samples: list[float], errors: int) -> Latency:
    if not samples:
        return Latency(0, errors, float("nan"), float("nan"))
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return Latency(len(samples) + errors, errors, 1000 * statistics.median(ordered), 1000 * p99)


def hammer(target: str, probe: mcil_pb2.Sample, clients: int, until: Callable[[], bool]) -> Latency:
    """``clients`` threads calling Classify back to back until ``until()``; their latencies."""
    times: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client() -> None:
        with grpc.insecure_channel(target) as channel:
            stub = mcil_pb2_grpc.ContinualLearnerStub(channel)  # type: ignore[no-untyped-call]
            request = mcil_pb2.ClassifyRequest(samples=[probe], top_k=1)
            while not until():
                started = time.perf_counter()
                try:
                    stub.Classify(request, timeout=30)
                except grpc.RpcError:
                    with lock:
                        errors[0] += 1
                    continue
                with lock:
                    times.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return _latency(times, errors[0])


def _for(seconds: float) -> Callable[[], bool]:
    end = time.monotonic() + seconds
    return lambda: time.monotonic() >= end


@dataclass
class SwapReport:
    clients: int
    idle: Latency
    learning: Latency
    committed: bool


def classify_through_a_commit(daemon: DaemonProcess, probe: mcil_pb2.Sample, examples: list[mcil_pb2.LabeledExample],
                              names: list[str], clients: int, idle_seconds: float) -> SwapReport:
    """Classify from ``clients`` threads while idle, then while a job learns ``names`` and commits."""
    idle = hammer(daemon.target, probe, clients, _for(idle_seconds))
    done = threading.Event()
    outcome = {}

    def learn() -> None:
        try:
            reply = daemon.client.learn(names, examples)
            outcome["job"] = daemon.client.wait(reply.job_id)
        finally:
            done.set()

    learner = threading.Thread(target=learn)
    learner.start()
    learning = hammer(daemon.target, probe, clients, done.is_set)
    learner.join()
    job = outcome.get("job")
    return SwapReport(clients, idle, learning, job is not None and job.state == mcil_pb2.JOB_STATE_SUCCEEDED)


@dataclass
class StallReport:
    stalled: int
    held: int  # open at once (the rest were refused: RESOURCE_EXHAUSTED)
    refused: int
    idle: Latency
    stalling: Latency
    health_ms: float  # the slowest health check while stalling


def classify_through_stalled_uploads(daemon: DaemonProcess, probe: mcil_pb2.Sample, stalls: int, clients: int,
                                     seconds: float) -> StallReport:
    """Open ``stalls`` uploads that send a header and then nothing; Classify and health meanwhile."""
    idle = hammer(daemon.target, probe, clients, _for(seconds))
    release = threading.Event()
    codes: list[str] = []
    lock = threading.Lock()
    channel = grpc.insecure_channel(daemon.target)
    stub = mcil_pb2_grpc.ContinualLearnerStub(channel)  # type: ignore[no-untyped-call]

    def stalled(i: int) -> None:
        def messages() -> Iterator[mcil_pb2.LearnNewClassesRequest]:
            header = mcil_pb2.LearnHeader(request_id=f"stall-{i}", class_names=[f"stall{i}"])
            yield mcil_pb2.LearnNewClassesRequest(header=header)
            release.wait(600)

        try:
            stub.LearnNewClasses(messages(), timeout=600)
            code = "OK"
        except grpc.RpcError as exc:
            code = exc.code().name
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=stalled, args=(i,), daemon=True) for i in range(stalls)]
    for t in threads:
        t.start()
    time.sleep(1.0)  # let the refused ones come back
    with lock:
        refused = sum(1 for c in codes if c == "RESOURCE_EXHAUSTED")
    health_worst = [0.0]

    def health() -> None:
        h = health_pb2_grpc.HealthStub(channel)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.perf_counter()
            h.Check(health_pb2.HealthCheckRequest(), timeout=30)
            health_worst[0] = max(health_worst[0], 1000 * (time.perf_counter() - started))
            time.sleep(0.05)

    checker = threading.Thread(target=health)
    checker.start()
    stalling = hammer(daemon.target, probe, clients, _for(seconds))
    checker.join()
    release.set()
    for t in threads:
        t.join(timeout=30)
    channel.close()
    return StallReport(stalls, stalls - refused, refused, idle, stalling, health_worst[0])


@dataclass
class ImageReport:
    images: int
    side: int
    bytes_each: int
    errors: int
    rss_before_mib: float
    rss_peak_mib: float
    added_mib: float  # the peak above what it held before the calls


def largest_image(side: int, fmt: str) -> bytes:
    """A ``side`` x ``side`` picture that compresses (so it fits a gRPC message), as PNG or JPEG."""
    from PIL import Image

    yy, xx = np.mgrid[0:side, 0:side]
    pixels = np.stack([xx * 255 // side, yy * 255 // side, (xx ^ yy) & 0xFF], axis=2).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, quality=70) if fmt == "JPEG" else \
        Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def memory_for_largest_images(daemon: DaemonProcess, images: int, side: int) -> ImageReport:
    """``images`` concurrent Classify calls of one ``side``-pixel image each (PNG and JPEG alternating);
    the daemon's resident memory sampled every 5 ms throughout."""
    files = [largest_image(side, "PNG"), largest_image(side, "JPEG")]
    warm = mcil_pb2.Sample(image_bytes=largest_image(256, "PNG"))
    for _ in range(3):  # the first calls allocate the model's working memory: not the images' cost
        daemon.client.classify([warm], top_k=1)
    before = daemon.resident_kib()
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], daemon.resident_kib())
            time.sleep(0.005)

    errors = [0]

    def call(i: int) -> None:
        try:
            with grpc.insecure_channel(daemon.target, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
                request = mcil_pb2.ClassifyRequest(samples=[mcil_pb2.Sample(image_bytes=files[i % 2])], top_k=1)
                mcil_pb2_grpc.ContinualLearnerStub(ch).Classify(  # type: ignore[no-untyped-call]
                    request, timeout=120)
        except grpc.RpcError:
            errors[0] += 1

    sampler = threading.Thread(target=sample)
    sampler.start()
    callers = [threading.Thread(target=call, args=(i,)) for i in range(images)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    stop.set()
    sampler.join()
    return ImageReport(images, side, max(len(f) for f in files), errors[0], before / 1024, peak[0] / 1024,
                       (peak[0] - before) / 1024)
