"""Training jobs: one runs at a time, a bounded number wait; each ends succeeded, rejected, failed or cancelled.

A job trains a clone of the served learner off to the side while Classify keeps answering from the
served version, evaluates every learned task on its held-out examples, checks the commit gate, and
hands the result to a ``commit`` callback (the daemon writes the version and swaps it in). Job records
are written to the state directory at every change of state or phase, so after a crash the daemon
finds jobs that were queued or running and marks them failed.

    queued -> running (preparing -> training -> evaluating -> committing) -> succeeded | rejected
                     \\-> failed | cancelled
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from service.errors import FailedPrecondition, InvalidRequest, NotFound, ResourceExhausted, Unavailable
from service.job_records import (
    ENDED,
    INTERRUPTED,
    KEEP_JOB_RECORDS,
    MAX_JOB_ID_LENGTH,
    ONE_CLASS_FIRST_TASK,
    Job,
    TrainingOutcome,
    Upload,
    same_names,
    task_warnings,
)

if TYPE_CHECKING:
    from model.training import TrainingProgress
    from service.metrics import ServiceMetrics
    from service.store import StateStore

log = logging.getLogger(__name__)

# Re-exported from service/job_records.py: whoever uses the runner needs the records of its jobs too.
__all__ = ["ENDED", "INTERRUPTED", "KEEP_JOB_RECORDS", "MAX_JOB_ID_LENGTH", "ONE_CLASS_FIRST_TASK", "Job", "JobContext",
           "JobRunner", "TrainingOutcome", "TrainFunction", "Upload", "same_names", "task_warnings"]


class JobContext:
    """What a running job's training function may do: report progress and ask whether to stop."""

    def __init__(self, runner: "JobRunner", job_id: str) -> None:
        self._runner = runner
        self.job_id = job_id
        self._train_started: float | None = None

    def should_stop(self) -> bool:
        return self._runner._stop_requested(self.job_id)

    def phase(self, phase: str, **changes: Any) -> None:
        self._runner._update(self.job_id, persist=True, phase=phase, **changes)

    def check_task_warnings(self, known_classes: Sequence[str]) -> None:
        """Decide the job's task warnings again now that it starts, given the classes served now (no
        job ahead of it is unfinished): it may have become the first task since it was accepted, if
        the job ahead failed or was cancelled or rejected. Warnings are only added, never withdrawn."""
        self._runner._check_task_warnings(self.job_id, known_classes)

    def progress(self, p: "TrainingProgress") -> None:
        eta = None
        if p.phase == "training":
            now = time.monotonic()
            if self._train_started is None or p.step == 0:
                self._train_started = now
            elif p.step > 0 and p.steps >= p.step:
                eta = (now - self._train_started) / p.step * (p.steps - p.step)
        phase = p.phase if p.phase in ("preparing", "training", "evaluating") else "training"
        self._runner._update(self.job_id, persist=False, phase=phase, epoch=p.epoch, epochs=p.epochs,
                             step=p.step, steps=p.steps, loss=p.loss, eta_seconds=eta)


TrainFunction = Callable[[Job, Upload, JobContext], TrainingOutcome]


class JobRunner:
    """A single worker thread over a bounded queue of uploads, with job records kept in ``store``."""

    def __init__(self, store: "StateStore", metrics: "ServiceMetrics", train: TrainFunction, *,
                 max_queued: int, learner_trains: bool = True) -> None:
        self._store = store
        self._learner_trains = learner_trains  # False for a strategy that only adds prototypes (zero-shot)
        self._metrics = metrics
        self._train = train
        self._max_queued = max_queued
        self._jobs: dict[str, Job] = {}
        self._uploads: dict[str, Upload] = {}
        self._by_request: dict[str, str] = {}
        self._cancel: set[str] = set()
        self._changed = threading.Condition()
        self._queue: "queue.Queue[str | None]" = queue.Queue()
        self._running: str | None = None
        self._closing = False
        self._thread: threading.Thread | None = None

    # -- start-up ------------------------------------------------------------------------------------
    def recover(self, committed: Mapping[str, int]) -> list[Job]:
        """Load job records; mark jobs a crash interrupted. A job whose version got committed (the
        ``current`` pointer moved) before the crash is marked succeeded instead; ``committed`` maps such
        job ids to their version. Returns the jobs it changed."""
        changed = []
        for data in self._store.read_jobs():
            job = Job.from_dict(data)
            if not job.ended:
                if job.job_id in committed:
                    job = replace(job, state="succeeded", phase="done", finished_at=time.time(),
                                  committed_version=committed[job.job_id],
                                  message="committed just before the daemon stopped")
                else:
                    job = replace(job, state="failed", phase="done", finished_at=time.time(), message=INTERRUPTED)
                self._store.write_job(job.to_dict())
                changed.append(job)
                log.warning("job %s: %s", job.job_id, job.message)
            self._jobs[job.job_id] = job
            if job.request_id:
                self._by_request[job.request_id] = job.job_id
        return changed

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mcil-jobs", daemon=True)
        self._thread.start()

    # -- API -----------------------------------------------------------------------------------------
    def submit(self, upload: Upload, known_classes: Sequence[str]) -> tuple[Job, bool]:
        """Queue a job for ``upload``; for a known request_id return its job and ``True``.
        Refuses classes in ``known_classes`` (the served version's) or taught by an unfinished job."""
        with self._changed:
            if self._closing:
                raise Unavailable("the daemon is shutting down")
            existing = self._by_request.get(upload.request_id)
            if existing is not None:
                job = self._jobs[existing]
                if job.digest != upload.digest:
                    raise InvalidRequest("header.request_id", "was already used for a different upload")
                return job, True
            existing_classes = same_names(upload.class_names, known_classes)
            if existing_classes:
                raise InvalidRequest("header.class_names", f"class(es) {existing_classes} already exist")
            pending = [c for j in self._jobs.values() if not j.ended for c in j.class_names]
            clash = same_names(upload.class_names, pending)
            if clash:
                raise InvalidRequest("header.class_names", f"class(es) {clash} are already being learned by a job")
            waiting = sum(1 for j in self._jobs.values() if j.state == "queued")
            if waiting >= self._max_queued + (0 if self._running is not None else 1):
                raise ResourceExhausted("a training job is running and the job queue is full; retry later")
            job = Job(
                job_id=uuid.uuid4().hex[:16],
                request_id=upload.request_id,
                digest=upload.digest,
                class_names=upload.class_names,
                created_at=time.time(),
                train_examples=len(upload.train),
                held_out_examples=len(upload.held_out),
                # Decided again when the job starts (JobContext.check_task_warnings).
                warnings=task_warnings(upload.class_names, known_classes, pending,
                                       learner_trains=self._learner_trains),
            )
            for warning in job.warnings:
                log.warning("job %s: %s", job.job_id, warning)
            self._jobs[job.job_id] = job
            self._uploads[job.job_id] = upload
            self._by_request[upload.request_id] = job.job_id
            self._store.write_job(job.to_dict())
            self._queue.put(job.job_id)
            self._gauges()
            self._changed.notify_all()
            return job, False

    def get(self, job_id: str) -> Job:
        if not job_id or len(job_id) > MAX_JOB_ID_LENGTH or not job_id.isprintable():
            raise InvalidRequest("job_id", f"must be 1..{MAX_JOB_ID_LENGTH} printable characters "
                                 f"(got {len(job_id)} characters)")
        with self._changed:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"job {job_id!r} does not exist")
        return job

    def cancel(self, job_id: str) -> Job:
        with self._changed:
            job = self.get(job_id)
            if job.ended:
                return job
            if job.state == "queued":
                self._finish(job_id, "cancelled", "cancelled before it started")
            else:
                if job.phase == "committing":
                    raise FailedPrecondition("the job is committing its version and can no longer be cancelled")
                self._cancel.add(job_id)
            return self._jobs[job_id]

    def watch(self, job_id: str, is_active: Callable[[], bool]) -> Iterator[Job]:
        """The job now, then every change, until it ends (or ``is_active`` turns False)."""
        job = self.get(job_id)
        yield job
        seen = job.revision
        while not job.ended and is_active():
            with self._changed:
                # wait_for evaluates the predicate before it returns, never after this iteration.
                self._changed.wait_for(
                    lambda: self._jobs[job_id].revision != seen or self._closing, timeout=0.5)  # noqa: B023
                job = self._jobs[job_id]
            if job.revision != seen:
                seen = job.revision
                yield job
            elif self._closing:
                return

    @property
    def running_job_id(self) -> str:
        return self._running or ""

    def queued_count(self) -> int:
        with self._changed:
            return sum(1 for j in self._jobs.values() if not j.ended)

    def busy(self) -> bool:
        return self._running is not None

    def list(self) -> list[Job]:
        with self._changed:
            return sorted(self._jobs.values(), key=lambda j: j.created_at)

    def close(self, timeout: float) -> None:
        """Stop: queued jobs and the running one end as failed (interrupted)."""
        with self._changed:
            self._closing = True
            for job_id, job in list(self._jobs.items()):
                if job.state == "queued":
                    self._finish(job_id, "failed", INTERRUPTED)
            self._changed.notify_all()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            if timeout > 0 and self._thread.is_alive():
                log.error("the training thread did not stop within %.0f s", timeout)

    # -- worker --------------------------------------------------------------------------------------
    def _stop_requested(self, job_id: str) -> bool:
        return self._closing or job_id in self._cancel

    def _update(self, job_id: str, *, persist: bool, **changes: Any) -> None:
        with self._changed:
            job = self._jobs[job_id]
            job = replace(job, revision=job.revision + 1, **changes)
            self._jobs[job_id] = job
            if persist:
                self._write(job)
            self._changed.notify_all()
        running = job.state == "running"
        self._metrics.job_progress(job.phase if running else None, step=job.step, steps=job.steps,
                                   loss=job.loss, eta_seconds=job.eta_seconds)

    def _check_task_warnings(self, job_id: str, known_classes: Sequence[str]) -> None:
        with self._changed:
            job = self._jobs[job_id]
            found = task_warnings(job.class_names, known_classes, (), learner_trains=self._learner_trains)
            new = tuple(w for w in found if w not in job.warnings)
            for warning in new:
                log.warning("job %s: %s", job_id, warning)
            if new:
                self._update(job_id, persist=True, warnings=(*job.warnings, *new))

    def _write(self, job: Job) -> None:
        try:
            self._store.write_job(job.to_dict())
        except OSError:
            log.exception("cannot write the record of job %s", job.job_id)

    def _finish(self, job_id: str, state: str, message: str = "", **changes: Any) -> None:
        job = self._jobs[job_id]
        if job.ended:
            return
        finished = time.time()
        self._update(job_id, persist=True, state=state, phase="done", message=message, finished_at=finished,
                     eta_seconds=None, **changes)
        upload = self._uploads.pop(job_id, None)  # training data is not kept once the job ends
        self._cancel.discard(job_id)
        try:
            self._metrics["mcil_jobs_total"].labels(state).inc()
            if upload is not None and upload.district is not None and changes.get("committed_version"):
                self._metrics["mcil_district_classes_gained_total"].inc(len(job.class_names))
            if job.started_at:
                self._metrics["mcil_job_duration_seconds"].labels(state).observe(finished - job.started_at)
        except Exception:  # noqa: BLE001
            log.debug("metrics: cannot record a job", exc_info=True)
        self._gauges()
        log.info("job %s %s%s", job_id, state, f": {message}" if message else "")

    def _gauges(self) -> None:
        try:
            self._metrics["mcil_jobs_queued"].set(sum(1 for j in self._jobs.values() if j.state == "queued"))
            self._metrics["mcil_jobs_running"].set(1 if self._running else 0)
        except Exception:  # noqa: BLE001
            pass

    def _run(self) -> None:
        from model.training import TrainingCancelled

        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            with self._changed:
                job = self._jobs[job_id]
                if job.state != "queued":
                    continue
                upload = self._uploads[job_id]
                self._running = job_id
                self._update(job_id, persist=True, state="running", phase="preparing", started_at=time.time())
                self._gauges()
            context = JobContext(self, job_id)
            try:
                outcome = self._train(self._jobs[job_id], upload, context)
            except TrainingCancelled:
                with self._changed:
                    if self._closing:
                        self._finish(job_id, "failed", INTERRUPTED)
                    else:
                        self._finish(job_id, "cancelled", "cancelled during training")
            except Exception as exc:  # noqa: BLE001 - a job failure must not stop the worker
                from service.errors import status_for

                code, message = status_for(exc)
                if code.value == "INTERNAL":
                    log.exception("job %s failed", job_id)
                with self._changed:
                    self._finish(job_id, "failed", message)
            else:
                with self._changed:
                    self._finish(job_id, outcome.state, outcome.message, figures=outcome.figures,
                                 held_out_per_task=outcome.held_out_per_task,
                                 committed_version=outcome.committed_version)
            finally:
                with self._changed:
                    self._running = None
                    self._gauges()
                    self._changed.notify_all()
                try:
                    self._store.prune_jobs(KEEP_JOB_RECORDS)
                except OSError:
                    log.exception("cannot prune old job records")
