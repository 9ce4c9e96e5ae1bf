"""Every Prometheus metric the daemon exports, defined in one place.

:data:`METRICS` is the catalogue (name, type, help, labels, unit); :class:`ServiceMetrics` builds
them on a registry of its own (one per daemon, so several daemons can live in one process, as in the
tests). Names follow the Prometheus conventions: prefix ``mcil_``, base units (seconds, bytes, ratios
in [0, 1] rather than percent), ``_total`` for counters. Labels never carry request data: no class
names, no sample content, no job ids. :func:`serve_metrics` exposes ``/metrics`` and nothing else.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600, 7200)

FIGURES = ("average_accuracy", "last_accuracy", "forgetting", "bwt", "fwt", "m1")
"""Continual-learning figures exported as ratios (the model reports them in percent)."""


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric. ``kind``: counter, gauge or histogram."""

    name: str
    kind: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


METRICS: tuple[MetricSpec, ...] = (
    # -- requests ------------------------------------------------------------------------------------
    MetricSpec("mcil_requests_total", "counter", "gRPC calls handled, by method and status code.",
               ("rpc", "code")),
    MetricSpec("mcil_request_duration_seconds", "histogram",
               "Time from receiving a gRPC call to sending its status, by method and status code.",
               ("rpc", "code"), LATENCY_BUCKETS),
    MetricSpec("mcil_classify_samples_total", "counter", "Samples classified, by modality path that answered.",
               ("path",)),
    MetricSpec("mcil_classify_batch_size", "histogram", "Samples per model call made by the Classify batcher.",
               (), BATCH_BUCKETS),
    MetricSpec("mcil_classify_queue_depth", "gauge", "Classify requests waiting for the batcher."),
    MetricSpec("mcil_classify_queue_delay_seconds", "histogram",
               "Time a Classify request waited in the batcher's queue.", (), LATENCY_BUCKETS),
    MetricSpec("mcil_upload_bytes_total", "counter", "Bytes received by LearnNewClasses uploads."),
    MetricSpec("mcil_auth_failures_total", "counter", "Calls refused by authentication, by status code.",
               ("code",)),
    # -- jobs ----------------------------------------------------------------------------------------
    MetricSpec("mcil_jobs_total", "counter", "Training jobs that ended, by final state.", ("state",)),
    MetricSpec("mcil_job_duration_seconds", "histogram",
               "Time from a job's start to its end (training, evaluation, commit), by final state.",
               ("state",), JOB_BUCKETS),
    MetricSpec("mcil_jobs_queued", "gauge", "Training jobs waiting to start."),
    MetricSpec("mcil_jobs_running", "gauge", "Training jobs running (0 or 1)."),
    MetricSpec("mcil_job_phase", "gauge",
               "1 for the phase the running job is in, 0 for the others (all 0 when no job runs).", ("phase",)),
    MetricSpec("mcil_job_step", "gauge", "Optimizer steps the running job has taken (0 when none runs)."),
    MetricSpec("mcil_job_steps", "gauge", "Optimizer steps the running job will take in all (0 when none runs)."),
    MetricSpec("mcil_job_loss", "gauge", "The running job's latest training loss (0 when none runs).",),
    MetricSpec("mcil_job_eta_seconds", "gauge",
               "Estimated seconds until the running job's training ends (0 when unknown or none runs)."),
    # -- the served model ----------------------------------------------------------------------------
    # -- district (docs/district.md) -----------------------------------------------------------------
    MetricSpec("mcil_district_round", "gauge", "The district round whose merge the served version holds (0: none)."),
    MetricSpec("mcil_district_rooms_merged", "gauge",
               "Rooms whose statistics the served version holds, this one included (0: none)."),
    MetricSpec("mcil_district_classes_gained_total", "counter", "Classes this room gained from district merges."),
    MetricSpec("mcil_model_version", "gauge", "The served model version (0 before anything was learned)."),
    MetricSpec("mcil_model_classes", "gauge", "Classes the served version knows."),
    MetricSpec("mcil_model_tasks", "gauge", "Tasks (LearnNewClasses jobs) the served version has learned."),
    MetricSpec("mcil_model_info", "gauge", "Always 1; labels describe the served model.",
               ("preset", "strategy", "runner", "device")),
    MetricSpec("mcil_model_commit_timestamp_seconds", "gauge", "Unix time the served version was committed."),
    MetricSpec("mcil_model_versions_stored", "gauge", "Committed versions kept in the state directory."),
    MetricSpec("mcil_classify_latency_objective_seconds", "gauge",
               "The Classify p99 latency this deployment promises (monitoring.classify_p99_seconds); the "
               "McilClassifyLatencyHigh alert compares against it."),
    # -- continual-learning figures (docs/metrics.md), per modality path, set at every commit ----------
    MetricSpec("mcil_continual_average_accuracy_ratio", "gauge",
               "Average incremental accuracy Acc_avg of the served version, as a ratio.", ("path",)),
    MetricSpec("mcil_continual_last_accuracy_ratio", "gauge",
               "Last accuracy A_T (pooled over every learned task), as a ratio.", ("path",)),
    MetricSpec("mcil_continual_forgetting_ratio", "gauge", "Forgetting F_T, as a ratio.", ("path",)),
    MetricSpec("mcil_continual_bwt_ratio", "gauge", "Backward transfer BWT, as a ratio.", ("path",)),
    MetricSpec("mcil_continual_fwt_ratio", "gauge", "Forward transfer FWT, as a ratio.", ("path",)),
    MetricSpec("mcil_continual_m1_ratio", "gauge", "The seed paper's M1 (0..100 in the paper), as a ratio.",
               ("path",)),
    MetricSpec("mcil_continual_m2", "gauge", "The seed paper's M2 (unitless).", ("path",)),
    MetricSpec("mcil_continual_task_accuracy_ratio", "gauge",
               "Accuracy on each learned task's held-out examples after the latest task (the last row of the "
               "accuracy matrix), as a ratio; task counts from 1 in learning order.", ("path", "task")),
    MetricSpec("mcil_continual_held_out_samples", "gauge",
               "Held-out samples the figures were measured on (all learned tasks)."),
)


JOB_PHASES = ("preparing", "training", "evaluating", "committing")
"""Values of ``mcil_job_phase``'s label (a queued or ended job has no phase there)."""

STANDARD_SERIES = ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
                   "process_open_fds", "process_max_fds", "process_start_time_seconds", "python_info")
"""The daemon process's own series (prometheus_client's process and platform collectors, Linux)."""
LEARNER_PREFIX = "mcil_learner_"
LEARNER_SERIES = tuple(LEARNER_PREFIX + name for name in STANDARD_SERIES if name.startswith("process_"))
"""A light daemon's learner child's process series, as its serving process serves them (service/light_metrics.py)."""


class ServiceMetrics:
    """The metrics of one daemon, on ``registry`` (a new one if not given), with the process's memory,
    CPU and file descriptors (``process_*``) and the Python version (``python_info``)."""

    def __init__(self, registry: "CollectorRegistry | None" = None) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            PlatformCollector,
            ProcessCollector,
            disable_created_metrics,
        )

        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: they double the output and nobody graphs them
        self.registry = registry if registry is not None else CollectorRegistry()
        self._metrics: dict[str, Any] = {}
        for spec in METRICS:
            # prometheus_client appends _total itself; give it the base name.
            if spec.kind == "counter":
                base = spec.name.removesuffix("_total")
                metric: Any = Counter(base, spec.help, spec.labels, registry=self.registry)
            elif spec.kind == "gauge":
                metric = Gauge(spec.name, spec.help, spec.labels, registry=self.registry)
            else:
                metric = Histogram(spec.name, spec.help, spec.labels, registry=self.registry, buckets=spec.buckets)
            self._metrics[spec.name] = metric
        if registry is None:  # a registry of our own: add what the default registry would have had
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        self.job_progress(None)

    def __getitem__(self, name: str) -> Any:
        return self._metrics[name]

    # -- helpers used by the daemon (each swallows its own errors: metrics never fail a request) -----
    def observe_request(self, rpc: str, code: str, seconds: float) -> None:
        try:
            self["mcil_requests_total"].labels(rpc, code).inc()
            self["mcil_request_duration_seconds"].labels(rpc, code).observe(seconds)
        except Exception:  # noqa: BLE001
            log.exception("metrics: cannot record a request")

    def job_progress(self, phase: str | None, *, step: int = 0, steps: int = 0, loss: float | None = None,
                     eta_seconds: float | None = None) -> None:
        """Publish the running job's phase and progress (``phase=None``: no job runs)."""
        try:
            for name in JOB_PHASES:
                self["mcil_job_phase"].labels(name).set(1 if name == phase else 0)
            self["mcil_job_step"].set(step if phase else 0)
            self["mcil_job_steps"].set(steps if phase else 0)
            self["mcil_job_loss"].set(loss if phase and loss is not None else 0)
            self["mcil_job_eta_seconds"].set(eta_seconds if phase and eta_seconds is not None else 0)
        except Exception:  # noqa: BLE001
            log.exception("metrics: cannot publish job progress")

    def set_model(self, *, version: int, classes: int, tasks: int, preset: str, strategy: str, runner: str, device: str,
                  committed_at: float, figures: Mapping[str, Mapping[str, Any]] | None,
                  held_out_samples: int, task_accuracies: Mapping[str, Sequence[float]] | None = None,
                  district: Mapping[str, Any] | None = None) -> None:
        """Publish what is served, its continual-learning figures (``{path: {figure: percent}}``) and
        the district merge it holds (``{"round": n, "rooms": [...]}``, docs/district.md)."""
        try:
            rooms = (district or {}).get("rooms")
            self["mcil_district_round"].set(int((district or {}).get("round", 0)))
            self["mcil_district_rooms_merged"].set(len(rooms) + 1 if rooms else 0)
            self["mcil_model_version"].set(version)
            self["mcil_model_classes"].set(classes)
            self["mcil_model_tasks"].set(tasks)
            self["mcil_model_info"].clear()
            self["mcil_model_info"].labels(preset, strategy, runner, device).set(1)
            self["mcil_model_commit_timestamp_seconds"].set(committed_at)
            self["mcil_continual_held_out_samples"].set(held_out_samples)
            for figure in FIGURES:
                self[f"mcil_continual_{figure}_ratio"].clear()
            self["mcil_continual_m2"].clear()
            self["mcil_continual_task_accuracy_ratio"].clear()
            for path, row in (task_accuracies or {}).items():
                for task, accuracy in enumerate(row, start=1):
                    self["mcil_continual_task_accuracy_ratio"].labels(path, str(task)).set(float(accuracy) / 100.0)
            for path, values in (figures or {}).items():
                for figure in FIGURES:
                    value = values.get(figure)
                    if isinstance(value, (int, float)):
                        self[f"mcil_continual_{figure}_ratio"].labels(path).set(float(value) / 100.0)
                m2 = values.get("m2")
                if isinstance(m2, (int, float)):
                    self["mcil_continual_m2"].labels(path).set(float(m2))
        except Exception:  # noqa: BLE001
            log.exception("metrics: cannot publish the model")

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


class _MetricsHandler(BaseHTTPRequestHandler):
    metrics: ServiceMetrics

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_error(404)
            return
        body = self.metrics.render()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("metrics endpoint: " + format, *args)


class MetricsEndpoint:
    """``/metrics`` over plain HTTP on its own port; ``port`` is the bound port (useful with port 0)."""

    def __init__(self, metrics: ServiceMetrics, host: str, port: int) -> None:
        handler = type("Handler", (_MetricsHandler,), {"metrics": metrics})
        self._server = ThreadingHTTPServer((host.strip("[]"), port), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="mcil-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
