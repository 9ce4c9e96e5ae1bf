"""Fuzzed requests against a real daemon: every rpc, hostile samples, raw bytes that are no message.

The requests come from Hypothesis strategies (:func:`requests`): Classify with samples whose images
and sounds are random bytes, truncated files, headers declaring huge sizes, 0-frame WAVs, tensors
of any shape, dtype and content; uploads whose header, labels, examples and chunks are any of
those; job ids of any length and alphabet; Rollback to versions that do not exist; and raw bytes
sent to every method. The daemon is expected to answer each with a status a client can act on
(OK or a client error), never INTERNAL or UNKNOWN, never to die, and never to change its state:
the fuzzing daemon needs more examples per class than any fuzzed upload holds, so no upload
becomes a job, and Rollback is never sent a version that exists other than the served one.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import grpc
import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from service._proto import mcil_pb2

SERVICE = "/mcil.v1.ContinualLearner/"
UNARY = ("Classify", "GetJob", "CancelJob", "ListClasses", "GetModelInfo", "ListVersions", "Rollback")
BAD_CODES = ("INTERNAL", "UNKNOWN", "UNAVAILABLE", "DEADLINE_EXCEEDED")


@dataclass
class FuzzReport:
    requests: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    bad: int = 0  # INTERNAL, UNKNOWN, or the daemon gone
    crashes: int = 0
    state_changes: int = 0
    tracebacks: int = 0  # in the daemon's log
    examples: list[str] = field(default_factory=list)  # a few of the requests answered badly


# -- what a hostile client can send ----------------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@st.composite
def png_headers(draw: st.DrawFn) -> bytes:
    """A PNG that declares any size and holds no pixel (a decompression bomb's header)."""
    width, height = draw(st.integers(0, 70_000)), draw(st.integers(0, 70_000))
    header = struct.pack(">IIBBBBB", width, height, 8, draw(st.sampled_from([0, 2, 3, 6])), 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"") + _chunk(b"IEND", b"")


@st.composite
def image_files(draw: st.DrawFn) -> bytes:
    """A small real image file in any format Pillow writes, possibly cut short."""
    from PIL import Image

    h, w = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    pixels = np.frombuffer(draw(st.binary(min_size=h * w * 3, max_size=h * w * 3)), np.uint8).reshape(h, w, 3)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=draw(st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "WEBP"])))
    data = buf.getvalue()
    return data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data


@st.composite
def sound_files(draw: st.DrawFn) -> bytes:
    """A WAV or FLAC of any length (0 frames too), rate and channel count, possibly cut short."""
    import soundfile

    frames, channels = draw(st.integers(0, 4000)), draw(st.integers(1, 3))
    rate = draw(st.sampled_from([1000, 7999, 8000, 16000, 44100, 192000]))
    wave = np.asarray(draw(st.lists(st.floats(-1, 1, width=32), min_size=1, max_size=8)), np.float32)
    data = np.resize(wave, (frames, channels))
    buf = io.BytesIO()
    soundfile.write(buf, data, rate, format=draw(st.sampled_from(["WAV", "FLAC"])))
    out = buf.getvalue()
    return out[: draw(st.integers(0, len(out)))] if draw(st.booleans()) else out


@st.composite
def tensors(draw: st.DrawFn) -> mcil_pb2.Tensor:
    dims = draw(st.one_of(st.lists(st.integers(0, 64), max_size=4), st.lists(st.integers(0, 2**32 - 1), max_size=70)))
    dtype = draw(st.integers(0, 3))
    size = int(np.prod(dims, dtype=object)) * (4 if dtype == 2 else 1) if dims else 0
    if 0 < size <= 64 * 64 * 4 and draw(st.booleans()):
        if dtype == 2:
            values = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=16))
            data = np.resize(np.asarray(values, "<f4"), size // 4).tobytes()
        else:
            data = draw(st.binary(min_size=size, max_size=size))
    else:
        data = draw(st.binary(max_size=64))
    return mcil_pb2.Tensor(shape=dims, dtype=dtype, data=data,  # type: ignore[arg-type]  # any value, on purpose
                           sample_rate=draw(st.integers(0, 2**32 - 1)))


def samples() -> st.SearchStrategy[mcil_pb2.Sample]:
    image = st.one_of(st.none(), st.binary(max_size=64).map(lambda b: ("image_bytes", b)),
                      png_headers().map(lambda b: ("image_bytes", b)), image_files().map(lambda b: ("image_bytes", b)),
                      tensors().map(lambda t: ("image_tensor", t)))
    audio = st.one_of(st.none(), st.binary(max_size=64).map(lambda b: ("audio_bytes", b)),
                      sound_files().map(lambda b: ("audio_bytes", b)), tensors().map(lambda t: ("audio_tensor", t)))

    def build(parts: tuple[Any, Any]) -> mcil_pb2.Sample:
        return mcil_pb2.Sample(**{name: value for name, value in (p for p in parts if p is not None)})

    return st.tuples(image, audio).map(build)


texts = st.one_of(st.text(max_size=40), st.text(min_size=100, max_size=300), st.just(""), st.just("x" * 100_000))


@st.composite
def uploads(draw: st.DrawFn) -> list[bytes]:
    """An upload stream as raw messages: maybe a header, then examples, chunks, stray headers."""
    messages: list[bytes] = []
    if draw(st.booleans()):
        header = mcil_pb2.LearnHeader(request_id=draw(texts), class_names=draw(st.lists(texts, max_size=4)),
                                      held_out_fraction=draw(st.floats(width=32)),
                                      expected_examples=draw(st.integers(0, 2**32 - 1)))
        messages.append(mcil_pb2.LearnNewClassesRequest(header=header).SerializeToString())
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["example", "chunk", "header", "empty", "raw"]))
        if kind == "example":
            example = mcil_pb2.LabeledExample(label=draw(texts), sample=draw(samples()), held_out=draw(st.booleans()))
            messages.append(mcil_pb2.LearnNewClassesRequest(example=example).SerializeToString())
        elif kind == "chunk":
            chunk = mcil_pb2.ExampleChunk(data=draw(st.binary(max_size=64)), last=draw(st.booleans()))
            messages.append(mcil_pb2.LearnNewClassesRequest(chunk=chunk).SerializeToString())
        elif kind == "header":
            messages.append(mcil_pb2.LearnNewClassesRequest(header=mcil_pb2.LearnHeader()).SerializeToString())
        elif kind == "empty":
            messages.append(b"")
        else:
            messages.append(draw(st.binary(max_size=32)))
    return messages


def requests() -> st.SearchStrategy[tuple[str, Any]]:
    """``(method, request)``: raw bytes for unary methods, a list of raw messages for LearnNewClasses."""
    job = st.one_of(texts, st.text(alphabet="0123456789abcdef", min_size=16, max_size=16))
    classify = st.builds(lambda s, k: mcil_pb2.ClassifyRequest(samples=s, top_k=k),
                         st.lists(samples(), max_size=4), st.integers(0, 2**32 - 1))
    return st.one_of(
        classify.map(lambda r: ("Classify", r.SerializeToString())),
        uploads().map(lambda m: ("LearnNewClasses", m)),
        st.tuples(st.sampled_from(["GetJob", "CancelJob", "WatchJob"]), job).map(
            lambda t: (t[0], mcil_pb2.JobRequest(job_id=t[1]).SerializeToString())),
        st.integers(2, 2**64 - 1).map(lambda v: ("Rollback", mcil_pb2.RollbackRequest(version=v).SerializeToString())),
        st.tuples(st.sampled_from([*UNARY, "WatchJob"]), st.binary(max_size=64)).filter(lambda c: not _rolls_back(*c)),
        st.sampled_from(["ListClasses", "GetModelInfo", "ListVersions"]).map(lambda m: (m, b"")),
    )


def _rolls_back(method: str, raw: bytes) -> bool:
    """Whether ``raw`` is a valid Rollback to the untrained model (a real state change, not fuzz)."""
    if method != "Rollback":
        return False
    try:
        return bool(mcil_pb2.RollbackRequest.FromString(raw).version == 0)
    except Exception:  # noqa: BLE001 - not a message at all: fine to send
        return False


# -- sending and judging ---------------------------------------------------------------------------
def send(channel: grpc.Channel, method: str, request: Any, timeout: float = 30.0) -> str:
    """The status code name the daemon answered ``request`` with ("OK" on success)."""
    path = SERVICE + method
    try:
        if method == "LearnNewClasses":
            channel.stream_unary(path)(iter(request), timeout=timeout)
        elif method == "WatchJob":
            for _ in channel.unary_stream(path)(request, timeout=timeout):
                break
        else:
            channel.unary_unary(path)(request, timeout=timeout)
    except grpc.RpcError as exc:
        return str(exc.code().name)
    return "OK"


def state_snapshot(state_dir: Path) -> list[tuple[str, str]]:
    """Every file of the state directory with the SHA-256 of its content (the lock file aside)."""
    return sorted((str(p.relative_to(state_dir)), hashlib.sha256(p.read_bytes()).hexdigest())
                  for p in state_dir.rglob("*") if p.is_file() and p.name != "LOCK")


def run_fuzz(target: str, state_dir: Path, count: int, *, seed: int, alive: Callable[[], bool],
             say: Callable[[str], None] = print, check_every: int = 250) -> FuzzReport:
    """Send ``count`` fuzzed requests to the daemon at ``target``; check its state every ``check_every``."""
    report = FuzzReport()
    if count <= 0:
        return report
    before = state_snapshot(state_dir)
    options = [("grpc.max_receive_message_length", 8 * 1024 * 1024), ("grpc.max_send_message_length", 8 * 1024 * 1024)]
    with grpc.insecure_channel(target, options=options) as channel:

        @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(requests())
        def one(call: tuple[str, Any]) -> None:
            method, request = call
            if report.crashes:
                return
            code = send(channel, method, request)
            report.requests += 1
            report.codes[code] = report.codes.get(code, 0) + 1
            if code in BAD_CODES:
                report.bad += 1
                if len(report.examples) < 5:
                    report.examples.append(f"{method} -> {code}: {repr(request)[:200]}")
            if not alive():
                report.crashes += 1
            if report.requests % check_every == 0:
                if state_snapshot(state_dir) != before:
                    report.state_changes += 1
                say(f"fuzz: {report.requests}/{count} requests, {report.bad} answered badly")

        hypothesis_seed(seed)(one)()
    if state_snapshot(state_dir) != before:
        report.state_changes += 1
    return report
