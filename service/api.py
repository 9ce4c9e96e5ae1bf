"""The gRPC servicer of ``mcil.v1.ContinualLearner``: messages in, :class:`~service.daemon.Daemon` calls,
messages out. This is the boundary where errors become status codes (:func:`service.errors.status_for`).
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, TypeVar

import grpc

from service._proto import mcil_pb2, mcil_pb2_grpc
from service.codec import decode_sample, encode_prediction
from service.district_api import receive_merge, statistics_parts
from service.errors import Code, InvalidRequest, status_for
from service.uploads import receive_upload

if TYPE_CHECKING:
    from service.codec import DecodeLimits
    from service.daemon import Daemon
    from service.jobs import Job
    from service.store import VersionMeta

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_TOP_K = 5

_STATES = {
    "queued": mcil_pb2.JOB_STATE_QUEUED, "running": mcil_pb2.JOB_STATE_RUNNING,
    "succeeded": mcil_pb2.JOB_STATE_SUCCEEDED, "rejected": mcil_pb2.JOB_STATE_REJECTED,
    "failed": mcil_pb2.JOB_STATE_FAILED, "cancelled": mcil_pb2.JOB_STATE_CANCELLED,
}
_PHASES = {
    "queued": mcil_pb2.JOB_PHASE_QUEUED, "preparing": mcil_pb2.JOB_PHASE_PREPARING,
    "training": mcil_pb2.JOB_PHASE_TRAINING, "evaluating": mcil_pb2.JOB_PHASE_EVALUATING,
    "committing": mcil_pb2.JOB_PHASE_COMMITTING, "done": mcil_pb2.JOB_PHASE_DONE,
}
_FIGURES = ("average_accuracy", "last_accuracy", "forgetting", "bwt", "fwt", "m1", "m2", "new_task_accuracy")


def _abort(context: grpc.ServicerContext, exc: BaseException) -> None:
    code, message = status_for(exc)
    if code is Code.INTERNAL:
        log.error("internal error", exc_info=exc)
    context.abort(getattr(grpc.StatusCode, code.value), message)


def boundary(method: F) -> F:
    """Map errors raised by a unary handler to gRPC status codes."""

    @functools.wraps(method)
    def wrapped(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except grpc.RpcError:  # raised by gRPC itself (a cancelled call's request stream): gRPC knows it
            raise
        except Exception as exc:  # noqa: BLE001 - the one place errors become statuses
            if context.code() is not None:  # already aborted
                raise
            _abort(context, exc)

    return wrapped  # type: ignore[return-value]


def streaming_boundary(method: F) -> F:
    """Map errors raised by a server-streaming handler to gRPC status codes."""

    @functools.wraps(method)
    def wrapped(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from method(self, request, context)
        except Exception as exc:  # noqa: BLE001
            if context.code() is not None:
                raise
            _abort(context, exc)

    return wrapped  # type: ignore[return-value]


def metrics_message(figures: Mapping[str, Mapping[str, float]], held: tuple[int, ...] | list[int],
                    out: mcil_pb2.JobMetrics) -> None:
    for path, values in figures.items():
        entry = out.paths[path]
        for name in _FIGURES:
            if name in values:
                setattr(entry, name, float(values[name]))
    out.tasks = len(held)
    out.held_out_per_task.extend(int(n) for n in held)


def job_message(job: "Job") -> mcil_pb2.Job:
    msg = mcil_pb2.Job(
        job_id=job.job_id, request_id=job.request_id, state=_STATES[job.state], phase=_PHASES[job.phase],
        class_names=list(job.class_names), epoch=job.epoch, epochs=job.epochs, step=job.step, steps=job.steps,
        base_version=job.base_version, committed_version=job.committed_version, message=job.message,
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
        train_examples=job.train_examples, held_out_examples=job.held_out_examples, warnings=list(job.warnings),
    )
    if job.loss is not None:
        msg.loss = job.loss
    if job.eta_seconds is not None:
        msg.eta_seconds = job.eta_seconds
    if job.figures:
        metrics_message(job.figures, job.held_out_per_task, msg.metrics)
    return msg


def version_message(meta: "VersionMeta", current: int,
                    task_accuracies: Mapping[str, list[float]] | None = None) -> mcil_pb2.VersionInfo:
    msg = mcil_pb2.VersionInfo(version=meta.version, created_at=meta.created_at, class_names=meta.classes,
                               tasks=len(meta.tasks), job_id=meta.job_id, current=meta.version == current)
    metrics_message(meta.figures, meta.held_out_counts, msg.metrics)
    for path, row in (task_accuracies or {}).items():
        msg.metrics.paths[path].task_accuracy.extend(row)
    return msg


def classify_response(request: mcil_pb2.ClassifyRequest, classify: Callable[[list[Any], int], tuple[int, list[Any]]],
                      limits: "DecodeLimits", max_samples: int,
                      decode: Callable[..., Any] = decode_sample) -> mcil_pb2.ClassifyResponse:
    """A ClassifyRequest decoded (``decode``: to the learner's samples, or to ``codec.RawInput``),
    answered by ``classify(samples, top_k) -> (version, predictions)``, encoded."""
    if len(request.samples) > max_samples:
        raise InvalidRequest("samples", f"at most {max_samples} per request")
    samples = [decode(f"samples[{i}]", s, limits) for i, s in enumerate(request.samples)]
    top_k = int(request.top_k) or DEFAULT_TOP_K
    version, predictions = classify(samples, top_k)
    response = mcil_pb2.ClassifyResponse(model_version=version)
    for prediction in predictions:
        encode_prediction(prediction, response.results.add())
    return response


class ContinualLearnerServicer(mcil_pb2_grpc.ContinualLearnerServicer):
    """Implements every rpc of ``protos/mcil.proto`` over a :class:`~service.daemon.Daemon`."""

    def __init__(self, daemon: "Daemon") -> None:
        self.daemon = daemon

    @boundary
    def Classify(self, request: mcil_pb2.ClassifyRequest, context: grpc.ServicerContext) -> mcil_pb2.ClassifyResponse:
        return classify_response(request, self.daemon.classify, self.daemon.decode_limits,
                                 self.daemon.config.limits.max_classify_samples)

    @boundary
    def LearnNewClasses(self, request_iterator: Iterator[mcil_pb2.LearnNewClassesRequest],
                        context: grpc.ServicerContext) -> mcil_pb2.LearnNewClassesResponse:
        upload_bytes = self.daemon.metrics["mcil_upload_bytes_total"]

        def count(n: int) -> None:
            try:
                upload_bytes.inc(n)
            except Exception:  # noqa: BLE001
                pass

        streams = self.daemon.streams
        with streams.hold("upload", context, idle=True) as stream:
            upload = receive_upload(streams.touching(stream, request_iterator), self.daemon.upload_rules, count)
        job, duplicate = self.daemon.submit(upload)
        return mcil_pb2.LearnNewClassesResponse(job_id=job.job_id, duplicate=duplicate,
                                                train_examples=job.train_examples,
                                                held_out_examples=job.held_out_examples)

    @streaming_boundary
    def WatchJob(self, request: mcil_pb2.JobRequest, context: grpc.ServicerContext) -> Iterator[mcil_pb2.Job]:
        assert self.daemon.jobs is not None
        with self.daemon.streams.hold("watch", context, idle=False):
            for job in self.daemon.jobs.watch(request.job_id, context.is_active):
                yield job_message(job)

    @boundary
    def GetJob(self, request: mcil_pb2.JobRequest, context: grpc.ServicerContext) -> mcil_pb2.Job:
        assert self.daemon.jobs is not None
        return job_message(self.daemon.jobs.get(request.job_id))

    @boundary
    def CancelJob(self, request: mcil_pb2.JobRequest, context: grpc.ServicerContext) -> mcil_pb2.Job:
        assert self.daemon.jobs is not None
        return job_message(self.daemon.jobs.cancel(request.job_id))

    @boundary
    def ListClasses(self, request: mcil_pb2.ListClassesRequest,
                    context: grpc.ServicerContext) -> mcil_pb2.ListClassesResponse:
        served = self.daemon.served
        return mcil_pb2.ListClassesResponse(class_names=served.classes, model_version=served.number)

    @boundary
    def GetModelInfo(self, request: mcil_pb2.GetModelInfoRequest, context: grpc.ServicerContext) -> mcil_pb2.ModelInfo:
        assert self.daemon.jobs is not None
        served = self.daemon.served
        learner = served.learner
        counts = learner.parameter_counts()
        per_task = counts.get("per_task", {}) if isinstance(counts.get("per_task"), dict) else {}
        info = mcil_pb2.ModelInfo(
            preset=learner.preset, strategy=learner.strategy_name, version=served.number,
            runner=self.daemon.serving_runner(served), keeps_exemplars=bool(learner.keeps_exemplars),
            queued_jobs=self.daemon.jobs.queued_count(), running_job_id=self.daemon.jobs.running_job_id,
            device=self.daemon.device_description,
            audio_clip_seconds=learner.backbone.clip_samples / learner.backbone.sample_rate,
        )
        keys = list(getattr(learner, "task_keys", []))
        for i, classes in enumerate(learner.tasks):
            key = keys[i] if i < len(keys) else ""
            info.tasks.add(index=i + 1, class_names=classes, parameters=int(per_task.get(key, 0)))
        for name, value in counts.items():
            if isinstance(value, int):
                info.parameters[name] = value
        return info

    @boundary
    def ListVersions(self, request: mcil_pb2.ListVersionsRequest,
                     context: grpc.ServicerContext) -> mcil_pb2.ListVersionsResponse:
        current = self.daemon.served.number
        response = mcil_pb2.ListVersionsResponse(current_version=current)
        for meta in self.daemon.versions():
            response.versions.append(version_message(meta, current, self.daemon.task_accuracies(meta.version)))
        return response

    @boundary
    def Rollback(self, request: mcil_pb2.RollbackRequest, context: grpc.ServicerContext) -> mcil_pb2.VersionInfo:
        meta = self.daemon.rollback(int(request.version))
        return version_message(meta, self.daemon.served.number)

    @streaming_boundary
    def GetRoomStatistics(self, request: mcil_pb2.RoomStatisticsRequest,
                          context: grpc.ServicerContext) -> Iterator[mcil_pb2.StatisticsPart]:
        yield from statistics_parts(self.daemon, request)

    @boundary
    def InstallDistrictMerge(self, request_iterator: Iterator[mcil_pb2.StatisticsPart],
                             context: grpc.ServicerContext) -> mcil_pb2.LearnNewClassesResponse:
        with self.daemon.streams.hold("upload", context, idle=True) as stream:
            job, duplicate = receive_merge(self.daemon, self.daemon.streams.touching(stream, request_iterator))
        return mcil_pb2.LearnNewClassesResponse(job_id=job.job_id, duplicate=duplicate)

