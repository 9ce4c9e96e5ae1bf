"""The daemon's core, free of gRPC: serve, learn, commit, roll back, describe.

:class:`Daemon` owns the state store, the served model slot, the Classify batcher, the job runner and
the metrics. The gRPC servicer (:mod:`service.api`) only translates messages to and from these calls.

Start-up (:meth:`Daemon.open`): lock the state directory, find the served version (the ``current``
pointer; if that version is damaged, the newest valid version before it, with a log line), load it,
and mark jobs that a crash interrupted as failed.

A job runs :class:`service.learning.LearningPipeline` (train, evaluate, gate, commit); rollback and
commit share one lock.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace as dc_replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from service.backbone_runner import attach_runner
from service.batching import Answer, ClassifyBatcher, predict_now
from service.codec import DecodeLimits
from service.compiling import Compiler
from service.config import ServiceConfig
from service.errors import ConfigError, FailedPrecondition, InvalidRequest
from service.int8_serving import upgrades
from service.jobs import Job, JobRunner, Upload
from service.learning import LearningPipeline
from service.memory import release_freed_memory
from service.metrics import ServiceMetrics
from service.recovery import discard_uncommitted_versions, enforce_retention
from service.serving import ModelSlot, ServedVersion
from service.store import CorruptVersion, StateStore, VersionMeta
from service.streams import StreamSlots
from service.uploads import UploadRules

if TYPE_CHECKING:
    import torch

    from export.compiled import CompiledVersion
    from export.head_version import HeadVersion
    from model.backbone import TriModalBackbone
    from model.learner import Learner
    from model.samples import Sample

log = logging.getLogger(__name__)

PATHS = ("av", "visual", "audio")


class Daemon:
    """See the module docstring. Call :meth:`open` once, :meth:`close` at the end."""

    def __init__(self, config: ServiceConfig, metrics: ServiceMetrics | None = None,
                 backbone: "TriModalBackbone | None" = None) -> None:
        """``backbone``: an already built, untrained backbone of ``config.server.preset`` to copy from
        (saves building one; the daemon never modifies it)."""
        self.config = config
        self.metrics = metrics or ServiceMetrics()
        self.metrics["mcil_classify_latency_objective_seconds"].set(config.monitoring.classify_p99_seconds)
        self.store = StateStore(config.server.state_dir)
        self.decode_limits = DecodeLimits(
            max_image_pixels=config.limits.max_image_pixels, max_audio_seconds=config.limits.max_audio_seconds,
            min_audio_seconds=config.limits.min_audio_seconds,
        )
        self.upload_rules = UploadRules(
            min_examples_per_class=config.learning.min_examples_per_class,
            held_out_fraction=config.learning.held_out_fraction,
            held_out_per_class=config.retention.held_out_per_class,
            max_classes_per_task=config.learning.max_classes_per_task,
            max_upload_bytes=config.limits.max_upload_bytes,
            max_upload_examples=config.limits.max_upload_examples,
            decode=self.decode_limits,
        )
        self._commit_lock = threading.Lock()  # one commit or rollback at a time
        self.compiler: Compiler | None = None  # with server.compiled, once open
        self.streams = StreamSlots(config.server.max_open_streams, config.limits.upload_idle_seconds)
        self._backbone: TriModalBackbone | None = backbone
        self.learning: LearningPipeline | None = None
        self.slot: ModelSlot | None = None
        self.jobs: JobRunner | None = None
        self.batcher: ClassifyBatcher | None = None
        self.preset = config.server.preset
        self.strategy = config.server.strategy
        self.runner = config.server.runner  # the runner in use (after any fallback)
        self.device: torch.device | None = None  # where the learner computes, once open

    def serving_runner(self, served: ServedVersion) -> str:
        """What runs ``served``'s Classify: its head over its base, its compiled graphs, or the frozen
        backbone's runner."""
        return served.runner or self.runner

    @property
    def device_description(self) -> str:
        """The learner's device as GetModelInfo and ``mcil_model_info`` say it ("" before ``open``)."""
        from model.device import describe_device

        return describe_device(self.device) if self.device is not None else ""

    # -- life cycle ----------------------------------------------------------------------------------
    def _build_backbone(self, preset: str) -> "TriModalBackbone":
        """The configured preset, untrained, on ``server.device``; unknown presets, strategies, bad
        weights or a device this machine lacks are ConfigErrors."""
        from model.backbone import WeightFiles, build_backbone

        device = self.device or self._device()
        w = self.config.weights
        try:
            backbone = build_backbone(preset, WeightFiles(clip=w.clip, audioclip=w.audioclip,
                                                          audio_projection=w.audio_projection))
        except (ValueError, FileNotFoundError) as exc:
            field = "server.preset" if "preset" in str(exc).split(":", 1)[0] else "weights"
            raise ConfigError(field, str(exc)) from None
        return backbone.to(device)

    def _device(self) -> "torch.device":
        """``server.device`` on this machine. A backbone handed to the constructor fixes the device:
        ``auto`` takes its device, and any other setting must name that same device."""
        from model.device import resolve_device
        from model.errors import InvalidInputError

        try:
            device = resolve_device(self.config.server.device, "server.device")
        except InvalidInputError as exc:
            raise ConfigError(exc.field, exc.problem) from None
        if self._backbone is not None:
            given = self._backbone.device
            if self.config.server.device != "auto" and given != device:
                raise ConfigError("server.device", f"{device} configured, but the backbone given is on {given}")
            device = given
        return device

    def open(self) -> None:
        from model.strategies import STRATEGIES

        if self.strategy not in STRATEGIES:
            raise ConfigError("server.strategy", f"unknown {self.strategy!r}; choose one of {sorted(STRATEGIES)}")
        self.device = self._device()  # before anything else: a GPU asked for but missing stops start-up
        placement = self.config.server.base_placement(check=self.config.server.compiled)  # and the base's GPU
        log.info("learner device: %s", self.device_description)
        if self.device.type == "cuda":
            import torch

            torch.cuda.set_device(self.device)  # GPU runners open their sessions on the current GPU
        if getattr(STRATEGIES[self.strategy], "keeps_training_data", False):
            raise ConfigError("server.strategy", f"{self.strategy!r} keeps all training data in memory; it is for "
                              "benchmarks only and the daemon does not serve it")
        try:
            self.store.open()
        except OSError as exc:
            raise ConfigError("server.state_dir", f"cannot use {str(self.store.root)!r}: {exc.strerror}") from None
        if self.config.server.compiled:
            w = self.config.weights
            weights = [f"--weights={name}={path}" for name, path in (("clip", w.clip), ("audioclip", w.audioclip),
                                                                     ("audio_projection", w.audio_projection))
                       if path is not None]
            self.compiler = Compiler(self.store.root / "compiled", self._compiled_ready, weights,
                                     bases=self.store.root / "bases", preset=self.preset,
                                     precision=self.config.server.base_precision, placement=placement)
            self.compiler.sweep(self.store.version_numbers(), leftovers=True)
        try:
            served = self._load_served()
            discard_uncommitted_versions(self.store)
            enforce_retention(self.store, self.config.retention.max_versions)
            self.slot = ModelSlot(served)
            self.learning = LearningPipeline(config=self.config, store=self.store, slot=self.slot,
                                             preset=self.preset, fresh_learner=self._fresh_learner,
                                             publish=self._publish, commit_lock=self._commit_lock)
            self.jobs = JobRunner(self.store, self.metrics, self.learning,
                                  max_queued=self.config.learning.max_queued_jobs,
                                  learner_trains=STRATEGIES[self.strategy].trains)
            committed = {served.meta.job_id: served.number} if served.meta else {}
            self.jobs.recover(committed)
            self.store.remove_orphan_held_out()
            self.jobs.start()
            if self.config.batching.enabled:
                b = self.config.batching
                self.batcher = ClassifyBatcher(self.slot, self.metrics, max_batch_size=b.max_batch_size,
                                               max_delay_ms=b.max_delay_ms, max_queue=b.max_queue,
                                               workers=b.workers)
            self._publish(served)
        except BaseException:
            if self.compiler is not None:
                self.compiler.close()
            self.store.close()
            raise

    def _load_served(self) -> ServedVersion:
        current = self.store.current_version()
        candidates = [n for n in reversed(self.store.version_numbers()) if n <= current] if current else []
        for number in candidates:
            try:
                meta = self.store.verify(number)
            except CorruptVersion as exc:
                log.error("version %d is damaged and skipped: %s", number, exc)
                continue
            if meta.preset != self.preset:
                raise ConfigError(
                    "server.preset",
                    f"the state directory {self.store.root} holds preset {meta.preset!r} models; "
                    f"the configuration says {self.preset!r} (use another state_dir or preset)",
                )
            self.strategy = meta.strategy
            if self._backbone is None:
                self._backbone = self._build_backbone(self.preset)
            try:
                served = self._load_version(number, meta)
            except (CorruptVersion, ValueError) as exc:
                log.error("version %d cannot be loaded and is skipped: %s", number, exc)
                continue
            if number != current:
                log.warning("serving version %d instead of the damaged version %d", number, current)
                self.store.set_current(number)
            log.info("serving version %d (%d classes)", number, len(served.classes))
            return served
        if current:
            log.error("no loadable version found (current was %d); starting with an untrained model", current)
        return ServedVersion(0, self._fresh_learner(), None, None)

    def _fresh_learner(self) -> "Learner":
        """An untrained learner of the configured preset and strategy (training overrides applied)."""
        import copy

        from model.learner import create_learner
        from model.learner_config import LearnerConfig

        if self._backbone is None:
            self._backbone = self._build_backbone(self.preset)
        learning = self.config.learning
        config = LearnerConfig()
        overrides: dict[str, Any] = {k: v for k, v in (("epochs", learning.epochs), ("min_steps", learning.min_steps),
                                                      ("batch_size", learning.batch_size),
                                                      ("learning_rate", learning.learning_rate)) if v is not None}
        if overrides:
            config = dc_replace(config, training=dc_replace(config.training, **overrides))
        learner = create_learner(self.preset, self.strategy, backbone=copy.deepcopy(self._backbone), config=config)
        self.runner = attach_runner(learner, self.config.server)
        return learner

    def _load_version(self, number: int, meta: VersionMeta) -> ServedVersion:
        from model.learner import Learner

        directory = self.store.version_dir(number)
        learner = Learner.load(directory, backbone=self._backbone)
        self.runner = attach_runner(learner, self.config.server)
        if [list(t) for t in meta.tasks] != learner.tasks:
            raise CorruptVersion("version.json and learner.json disagree on the learned classes")
        compiled = self.compiler.load(number, learner) if self.compiler is not None else None
        return ServedVersion(number, learner, meta, self.store.read_evaluation(number), compiled)

    def close(self, grace: float) -> None:
        """Stop the batcher (answering what is queued) and the job runner (interrupting a job)."""
        if self.compiler is not None:
            self.compiler.close()
        if self.batcher is not None:
            self.batcher.close()
        if self.jobs is not None:
            self.jobs.close(timeout=max(grace, 1.0) + 30.0)
        self.streams.close()
        self.store.close()

    @property
    def served(self) -> ServedVersion:
        assert self.slot is not None, "Daemon.open() was not called"
        return self.slot.current

    # -- serving -------------------------------------------------------------------------------------
    def classify(self, samples: Sequence["Sample"], top_k: int) -> Answer:
        if not samples:
            raise InvalidRequest("samples", "give at least one sample")
        if len(samples) > self.config.limits.max_classify_samples:
            raise InvalidRequest(
                "samples", f"at most {self.config.limits.max_classify_samples} per request, got {len(samples)}"
            )
        assert self.slot is not None
        if self.batcher is not None:
            version, predictions = self.batcher.submit(samples, top_k)
        else:
            version, predictions = predict_now(self.slot, samples, top_k)
        for p in predictions:
            try:
                self.metrics["mcil_classify_samples_total"].labels(p.path).inc()
            except Exception:  # noqa: BLE001
                pass
        return version, predictions

    # -- learning ------------------------------------------------------------------------------------
    def submit(self, upload: Upload) -> tuple[Job, bool]:
        assert self.jobs is not None
        return self.jobs.submit(upload, self.served.classes)

    # -- versions ------------------------------------------------------------------------------------
    def versions(self) -> list[VersionMeta]:
        return self.store.list_valid()

    def task_accuracies(self, number: int) -> dict[str, list[float]]:
        """``{path: accuracy per learned task after version number's task}`` (percent); empty if unreadable."""
        try:
            return last_rows(self.store.read_evaluation(number))
        except (OSError, ValueError, KeyError, TypeError, CorruptVersion):
            return {}

    def rollback(self, number: int) -> VersionMeta:
        """Serve committed version ``number`` again; 0 is the untrained model (nothing learned)."""
        assert self.slot is not None and self.jobs is not None
        if number < 0:
            raise InvalidRequest("version", "must be a committed version number, or 0 for the untrained model")
        with self._commit_lock:
            if self.jobs.busy():
                raise FailedPrecondition("a training job is running; wait for it or cancel it before rolling back")
            if number == 0:
                meta = VersionMeta(version=0, created_at=0.0, job_id="", preset=self.preset, strategy=self.strategy,
                                   tasks=(), held_out_files=(), held_out_counts=())
                if self.slot.current.number == 0:
                    return meta
                served = ServedVersion(0, self._fresh_learner(), None, None)
            else:
                meta = self.store.require_version(number)
                if number == self.slot.current.number:
                    return meta
                try:
                    served = self._load_version(number, meta)
                except (CorruptVersion, ValueError) as exc:
                    raise FailedPrecondition(f"version {number} cannot be loaded: {exc}") from None
            self.store.set_current(number)
            self.slot.swap(served)
            log.info("rolled back to version %d", number)
            self._publish(served)
            return meta

    def _compiled_ready(self, number: int, compiled: "CompiledVersion | HeadVersion") -> None:
        """The compiler's callback: serve version ``number`` from its graphs (or as its head over its
        base) if it is still served."""
        assert self.slot is not None
        with self._commit_lock:
            current = self.slot.current
            if current.number != number or current.learner is not compiled.learner or \
                    (current.compiled is not None and not upgrades(current.compiled, compiled)):
                return  # a commit or rollback came first; the folder stays for a later load
            served = dc_replace(current, compiled=compiled)
            self.slot.swap(served)
            log.info("version %d now answers from %s", number, served.runner)
            self._publish(served)  # under the lock, so that a commit or rollback publishes after it

    def _publish(self, served: ServedVersion) -> None:
        release_freed_memory()  # what the version it replaced, or a job, held
        if self.compiler is not None:
            try:
                self.compiler.sweep(self.store.version_numbers())
                if served.number > 0 and (served.compiled is None or self.compiler.int8.wants(served.compiled)):
                    self.compiler.submit(served.number, self.store.version_dir(served.number), served.learner)
            except Exception:  # noqa: BLE001 - compiling never fails a commit, a rollback or a start
                log.exception("cannot schedule compiling version %d; it serves the hybrid path", served.number)
        meta = served.meta
        self.metrics.set_model(
            version=served.number,
            classes=len(served.classes),
            tasks=len(served.learner.tasks),
            preset=self.preset,
            strategy=served.learner.strategy_name,
            runner=self.serving_runner(served),
            device=self.device_description,
            committed_at=meta.created_at if meta else 0.0,
            figures=meta.figures if meta else None,
            held_out_samples=sum(meta.held_out_counts) if meta else 0,
            task_accuracies=last_rows(served.evaluation),
            district=meta.district if meta else None,
        )
        try:
            self.metrics["mcil_model_versions_stored"].set(len(self.store.version_numbers()))
        except Exception:  # noqa: BLE001
            pass


def last_rows(evaluation: Mapping[str, Any] | None) -> dict[str, list[float]]:
    """``{path: accuracy per learned task after the latest one}`` (percent) from a stored evaluation."""
    paths = ((evaluation or {}).get("record") or {}).get("paths") or {}
    return {str(p): [float(v) for v in d["accuracy_matrix"][-1]] for p, d in paths.items()
            if d.get("accuracy_matrix")}
