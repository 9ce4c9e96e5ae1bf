"""A small typed Python client of the daemon, used by the ``mcil`` CLI, the benchmark and the tests.

    client = Client("127.0.0.1:50051", token=os.environ.get("MCIL_TOKEN"))
    reply = client.classify([sample_from_files("photo.jpg", "clip.wav")])
    job_id = client.learn(["applause", "lecture"], examples).job_id
    final = client.wait(job_id)

Uploads are streamed: a header, then one message per example, or consecutive chunks of the serialized
example when it is larger than ``chunk_bytes`` (default 1 MiB, well under gRPC's 4 MiB default).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import grpc

from service._proto import mcil_pb2, mcil_pb2_grpc
from service.codec import audio_tensor, image_tensor

if TYPE_CHECKING:
    import numpy as np

DEFAULT_CHUNK_BYTES = 1024 * 1024
PATH_NAMES = {1: "audio-visual", 2: "visual", 3: "audio"}
"""A ClassifyResult's ``path``, in words."""
ENDED_STATES = (mcil_pb2.JOB_STATE_SUCCEEDED, mcil_pb2.JOB_STATE_REJECTED, mcil_pb2.JOB_STATE_FAILED,
                mcil_pb2.JOB_STATE_CANCELLED)


@dataclass(frozen=True)
class TLSOptions:
    """Client TLS: the CA that signed the server, and a client certificate for mutual TLS."""

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    server_name: str | None = None  # override the name checked against the server certificate

    @classmethod
    def from_files(cls, ca: str | Path | None = None, cert: str | Path | None = None,
                   key: str | Path | None = None, server_name: str | None = None) -> "TLSOptions":
        def read(p: str | Path | None) -> bytes | None:
            return Path(p).read_bytes() if p else None

        return cls(read(ca), read(cert), read(key), server_name)


def sample_from_files(image: str | Path | None = None, audio: str | Path | None = None) -> mcil_pb2.Sample:
    """A sample carrying encoded file bytes (an image file and/or a WAV/FLAC file)."""
    sample = mcil_pb2.Sample()
    if image is not None:
        sample.image_bytes = Path(image).read_bytes()
    if audio is not None:
        sample.audio_bytes = Path(audio).read_bytes()
    return sample


def sample_from_arrays(image: "np.ndarray | None" = None, audio: "np.ndarray | None" = None,
                       sample_rate: int | None = None) -> mcil_pb2.Sample:
    """A sample carrying raw tensors (decoded image ``(H, W[, C])``; mono waveform with its rate)."""
    sample = mcil_pb2.Sample()
    if image is not None:
        image_tensor(image, sample.image_tensor)
    if audio is not None:
        if sample_rate is None:
            raise ValueError("sample_rate: required with audio")
        audio_tensor(audio, sample_rate, sample.audio_tensor)
    return sample


def learn_requests(header: mcil_pb2.LearnHeader, examples: Iterable[mcil_pb2.LabeledExample],
                   chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                   on_sent: Callable[[int, int], None] | None = None) -> Iterator[mcil_pb2.LearnNewClassesRequest]:
    """The message stream of one upload. ``on_sent(examples_sent, bytes_sent)`` reports progress."""
    yield mcil_pb2.LearnNewClassesRequest(header=header)
    sent = 0
    for count, example in enumerate(examples, start=1):
        size = example.ByteSize()
        if size <= chunk_bytes:
            yield mcil_pb2.LearnNewClassesRequest(example=example)
        else:
            data = example.SerializeToString()
            for start in range(0, len(data), chunk_bytes):
                piece = data[start : start + chunk_bytes]
                yield mcil_pb2.LearnNewClassesRequest(
                    chunk=mcil_pb2.ExampleChunk(data=piece, last=start + chunk_bytes >= len(data)))
        sent += size
        if on_sent is not None:
            on_sent(count, sent)


class Client:
    """One channel to the daemon. ``token`` is sent as ``authorization: Bearer`` on every call."""

    def __init__(self, target: str, *, token: str | None = None, tls: TLSOptions | None = None,
                 timeout: float = 60.0, max_message_bytes: int = 4 * 1024 * 1024) -> None:
        options: list[tuple[str, object]] = [("grpc.max_receive_message_length", max_message_bytes),
                                             ("grpc.max_send_message_length", max_message_bytes)]
        if tls is not None:
            creds = grpc.ssl_channel_credentials(tls.root_certificates, tls.private_key, tls.certificate_chain)
            if tls.server_name:
                options.append(("grpc.ssl_target_name_override", tls.server_name))
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.stub = mcil_pb2_grpc.ContinualLearnerStub(self.channel)  # type: ignore[no-untyped-call]
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- calls ---------------------------------------------------------------------------------------
    def classify(self, samples: Sequence[mcil_pb2.Sample], top_k: int = 0) -> mcil_pb2.ClassifyResponse:
        request = mcil_pb2.ClassifyRequest(samples=list(samples), top_k=top_k)
        response: mcil_pb2.ClassifyResponse = self.stub.Classify(request, timeout=self.timeout,
                                                                 metadata=self._metadata)
        return response

    def learn(self, class_names: Sequence[str], examples: Iterable[mcil_pb2.LabeledExample], *,
              request_id: str | None = None, held_out_fraction: float = 0.0, expected_examples: int = 0,
              chunk_bytes: int = DEFAULT_CHUNK_BYTES,
              on_sent: Callable[[int, int], None] | None = None) -> mcil_pb2.LearnNewClassesResponse:
        header = mcil_pb2.LearnHeader(request_id=request_id or uuid.uuid4().hex, class_names=list(class_names),
                                      held_out_fraction=held_out_fraction, expected_examples=expected_examples)
        response: mcil_pb2.LearnNewClassesResponse = self.stub.LearnNewClasses(
            learn_requests(header, examples, chunk_bytes, on_sent), timeout=self.timeout, metadata=self._metadata)
        return response

    def watch(self, job_id: str, timeout: float | None = None) -> Iterator[mcil_pb2.Job]:
        return iter(self.stub.WatchJob(mcil_pb2.JobRequest(job_id=job_id), timeout=timeout, metadata=self._metadata))

    def wait(self, job_id: str, timeout: float = 600.0) -> mcil_pb2.Job:
        """Watch a job until it ends; its final state."""
        last = None
        for job in self.watch(job_id, timeout=timeout):
            last = job
            if job.state in ENDED_STATES:
                return job
        assert last is not None
        return self.get_job(job_id)

    def get_job(self, job_id: str) -> mcil_pb2.Job:
        job: mcil_pb2.Job = self.stub.GetJob(mcil_pb2.JobRequest(job_id=job_id), timeout=self.timeout,
                                             metadata=self._metadata)
        return job

    def cancel_job(self, job_id: str) -> mcil_pb2.Job:
        job: mcil_pb2.Job = self.stub.CancelJob(mcil_pb2.JobRequest(job_id=job_id), timeout=self.timeout,
                                                metadata=self._metadata)
        return job

    def list_classes(self) -> mcil_pb2.ListClassesResponse:
        response: mcil_pb2.ListClassesResponse = self.stub.ListClasses(
            mcil_pb2.ListClassesRequest(), timeout=self.timeout, metadata=self._metadata)
        return response

    def model_info(self) -> mcil_pb2.ModelInfo:
        info: mcil_pb2.ModelInfo = self.stub.GetModelInfo(mcil_pb2.GetModelInfoRequest(), timeout=self.timeout,
                                                          metadata=self._metadata)
        return info

    def list_versions(self) -> mcil_pb2.ListVersionsResponse:
        response: mcil_pb2.ListVersionsResponse = self.stub.ListVersions(
            mcil_pb2.ListVersionsRequest(), timeout=self.timeout, metadata=self._metadata)
        return response

    def rollback(self, version: int) -> mcil_pb2.VersionInfo:
        info: mcil_pb2.VersionInfo = self.stub.Rollback(mcil_pb2.RollbackRequest(version=version),
                                                        timeout=self.timeout, metadata=self._metadata)
        return info

    # -- district (docs/district.md) -----------------------------------------------------------------
    def room_statistics(self, known_digest: str = "") -> tuple[mcil_pb2.StatisticsHeader, bytes]:
        """This room's own statistics: the header and the statistics file (empty when ``unchanged``)."""
        parts = self.stub.GetRoomStatistics(mcil_pb2.RoomStatisticsRequest(known_digest=known_digest),
                                            timeout=self.timeout, metadata=self._metadata)
        header, data = None, bytearray()
        for part in parts:
            if part.WhichOneof("part") == "header":
                header = part.header
            else:
                data += part.data
        if header is None:
            raise RuntimeError("the daemon sent no statistics header")
        return header, bytes(data)

    def install_district_merge(self, header: mcil_pb2.StatisticsHeader, data: bytes,
                               chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> mcil_pb2.LearnNewClassesResponse:
        """Sends a district round's merge (``header.round``, ``header.rooms``); the reply names its job."""
        def parts() -> Iterator[mcil_pb2.StatisticsPart]:
            yield mcil_pb2.StatisticsPart(header=header)
            for start in range(0, len(data), chunk_bytes):
                yield mcil_pb2.StatisticsPart(data=data[start:start + chunk_bytes])

        response: mcil_pb2.LearnNewClassesResponse = self.stub.InstallDistrictMerge(
            parts(), timeout=self.timeout, metadata=self._metadata)
        return response
