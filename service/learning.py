"""Learning one upload: the pipeline a training job runs, from the served learner to a committed version.

    preparing    clone the served learner; the untrained baseline for forward transfer; earlier
                 tasks' held-out examples
    training     ``learner.learn_task`` (the strategy decides what trains; ``mcil``: the first task only)
    evaluating   every learned task on its held-out examples, per modality path (docs/metrics.md)
    gate         the commit gate's bounds (``gate.*``); a job that misses one ends REJECTED
    committing   write the version directory, move ``current`` (the commit point), swap the served
                 version, prune old versions (never the served one nor the one it replaced)

The job runner (:mod:`service.jobs`) calls a :class:`LearningPipeline` for each job; the pipeline
knows nothing of gRPC. Crash recovery of the commit's steps is :mod:`service.recovery`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from service.config import ServiceConfig
from service.errors import FailedPrecondition, InvalidRequest
from service.failpoints import failpoint
from service.jobs import Job, JobContext, TrainingOutcome, Upload, same_names
from service.serving import ModelSlot, ServedVersion
from service.store import StateStore, VersionMeta

if TYPE_CHECKING:
    from model.learner import Learner
    from model.samples import LabeledSample

log = logging.getLogger(__name__)


class LearningPipeline:
    """See the module docstring. ``fresh_learner`` builds an untrained learner of the served preset and
    strategy; ``publish`` tells the metrics about a newly served version; ``commit_lock`` is shared
    with Rollback, so a commit and a rollback never interleave."""

    def __init__(self, *, config: ServiceConfig, store: StateStore, slot: ModelSlot, preset: str,
                 fresh_learner: Callable[[], "Learner"], publish: Callable[[ServedVersion], None],
                 commit_lock: threading.Lock) -> None:
        self.config = config
        self.store = store
        self.slot = slot
        self.preset = preset
        self._fresh_learner = fresh_learner
        self._publish = publish
        self._commit_lock = commit_lock
        self._untrained: "Learner | None" = None

    def __call__(self, job: Job, upload: Upload, ctx: JobContext) -> TrainingOutcome:
        """Learn ``upload`` on a clone of the served learner; commit it unless the gate refuses."""
        from model.protocol import ContinualEvaluation
        from model.training import TrainingCancelled, seed_learning

        base = self.slot.current
        ctx.phase("preparing", base_version=base.number)
        if upload.district is not None:
            return self._install(job, upload, ctx, base)
        clash = same_names(upload.class_names, base.classes)
        if clash:
            raise InvalidRequest("header.class_names", f"class(es) {clash} already exist")
        ctx.check_task_warnings(base.classes)  # the job ahead may have failed: now the first task?
        learner = base.learner.clone()
        baseline = self._baseline()
        evaluation = (
            ContinualEvaluation.from_dict(dict(base.evaluation), baseline=baseline) if base.evaluation
            else ContinualEvaluation(baseline=baseline, seed=self.config.learning.seed)
        )
        held_old: list[list[LabeledSample]] = []
        if base.meta is not None:
            held_old = [self.store.read_held_out(name) for name in base.meta.held_out_files]
        evaluation.before_task(learner, list(upload.class_names), list(upload.held_out))
        if ctx.should_stop():
            raise TrainingCancelled("stopped before training")
        seed_learning(self.config.learning.seed + len(base.learner.tasks))  # a job is reproducible
        learner.learn_task(list(upload.train), list(upload.class_names), progress=ctx.progress,
                           should_stop=ctx.should_stop)
        ctx.phase("evaluating", eta_seconds=None)
        held_by_task = [*held_old, list(upload.held_out)]
        evaluation.after_task(learner, held_by_task, list(upload.train))
        figures = figures_of(evaluation)
        held_counts = tuple(len(h) for h in held_by_task)
        ctx.phase("evaluating", figures=figures, held_out_per_task=held_counts)
        return self._gate_and_commit(job, upload, ctx, learner, evaluation.to_dict(), figures, figures, base,
                                     held_counts)

    def _install(self, job: Job, upload: Upload, ctx: JobContext, base: ServedVersion) -> TrainingOutcome:
        """A district round's merge (service/district.py): the same gate and commit as learning, on
        this room's own tasks' held-out examples; nothing is committed when the head would not change."""
        from model.protocol import ContinualEvaluation
        from service.district import own_task_figures, received_learner, same_head

        assert upload.district is not None
        learner = received_learner(base.learner, upload.district)
        if same_head(learner, base.learner):
            return TrainingOutcome("succeeded", dict(base.meta.figures) if base.meta else {}, (),
                                   message="nothing new: the served version already holds this merge")
        ctx.phase("evaluating", eta_seconds=None)
        held_old = [self.store.read_held_out(name) for name in base.meta.held_out_files] if base.meta else []
        record = ContinualEvaluation.from_dict(dict(base.evaluation)).record if base.evaluation else None
        before = {p: m.rows for p, m in record.matrices.items()} if record else {}
        now = ContinualEvaluation().accuracies(learner, held_old) if held_old else {}
        figures = own_task_figures(before, now)
        held_counts = tuple(len(h) for h in held_old)
        ctx.phase("evaluating", figures=figures, held_out_per_task=held_counts)
        # The version keeps the figures of its last taught task (M1, BWT, ...), with its own tasks'
        # accuracy and forgetting as they are now.
        kept = {p: {**(base.meta.figures.get(p, {}) if base.meta else {}), **f} for p, f in figures.items()}
        return self._gate_and_commit(job, upload, ctx, learner, dict(base.evaluation or {}), figures, kept, base,
                                     held_counts)

    def _gate_and_commit(self, job: Job, upload: Upload, ctx: JobContext, learner: "Learner",
                         evaluation: dict[str, Any], figures: Mapping[str, Mapping[str, float]],
                         stored: Mapping[str, Mapping[str, float]], base: ServedVersion,
                         held_counts: tuple[int, ...]) -> TrainingOutcome:
        """The commit gate on ``figures``, then the commit (``stored``: the figures the version records)."""
        from model.training import TrainingCancelled

        verdict = self.gate(figures)
        if verdict:
            return TrainingOutcome("rejected", figures, held_counts, message=verdict)
        if ctx.should_stop():
            raise TrainingCancelled("stopped before commit")
        ctx.phase("committing")
        number = self._commit(job, upload, learner, evaluation, stored, base, held_counts)
        return TrainingOutcome("succeeded", figures, held_counts, committed_version=number)

    def _baseline(self) -> "Learner":
        """An untrained learner of the same preset and strategy: the b[t] of forward transfer."""
        if self._untrained is None:
            self._untrained = self._fresh_learner()
        return self._untrained

    def gate(self, figures: Mapping[str, Mapping[str, float]]) -> str:
        """Empty when the commit gate passes, else why it does not."""
        gate = self.config.gate
        f = figures.get(gate.path, {})
        problems = []
        if gate.max_forgetting is not None and f.get("forgetting", 0.0) > gate.max_forgetting:
            problems.append(f"forgetting {f['forgetting']:.2f} points > max_forgetting {gate.max_forgetting:g}")
        if (gate.min_new_task_accuracy is not None and "new_task_accuracy" in f  # a merge teaches no task here
                and f["new_task_accuracy"] < gate.min_new_task_accuracy):
            problems.append(f"new-task accuracy {f.get('new_task_accuracy', 0.0):.2f}% < "
                            f"min_new_task_accuracy {gate.min_new_task_accuracy:g}%")
        if (gate.min_last_accuracy is not None and "last_accuracy" in f  # a room with nothing of its own: none
                and f["last_accuracy"] < gate.min_last_accuracy):
            problems.append(f"last accuracy {f.get('last_accuracy', 0.0):.2f}% < "
                            f"min_last_accuracy {gate.min_last_accuracy:g}%")
        return ("commit gate (" + gate.path + " path): " + "; ".join(problems)) if problems else ""

    def _commit(self, job: Job, upload: Upload, learner: "Learner", evaluation: dict[str, Any],
                figures: Mapping[str, Mapping[str, float]], base: ServedVersion,
                held_counts: tuple[int, ...]) -> int:
        with self._commit_lock:
            if self.slot.current.number != base.number:
                raise FailedPrecondition(
                    f"the served version changed from {base.number} to {self.slot.current.number} during training"
                )
            held_names: tuple[str, ...] = ()
            if upload.district is None:  # received classes have no held-out examples here
                held_names = (f"task-{job.job_id}.safetensors",)
                self.store.write_held_out(held_names[0], upload.held_out)
            number = max([0, *self.store.version_numbers()]) + 1
            meta = VersionMeta(
                version=number,
                created_at=time.time(),
                job_id=job.job_id,
                preset=self.preset,
                strategy=learner.strategy_name,
                tasks=tuple(tuple(t) for t in learner.tasks),
                held_out_files=(*(base.meta.held_out_files if base.meta else ()), *held_names),
                held_out_counts=held_counts,
                figures={k: dict(v) for k, v in figures.items()},
                district=(dict(base.meta.district) if base.meta else {}) if upload.district is None else
                {"round": upload.district.round, "rooms": list(upload.district.rooms)},
            )
            self.store.write_version(meta, learner.save, evaluation)
            failpoint("commit.after_rename")
            try:
                self.store.set_current(number)  # the commit point
            except BaseException:
                self.store.remove_version(number)  # never served: it must not linger as a version
                raise
            failpoint("commit.after_current")
            served = ServedVersion(number, learner, meta, evaluation)
            self.slot.swap(served)
            log.info("committed and serving version %d (%d classes)", number, len(served.classes))
            self._publish(served)
            try:
                self.store.prune(self.config.retention.max_versions, protect=(base.number,))
            except OSError:
                log.exception("cannot prune old versions")
            return number


def figures_of(evaluation: Any) -> dict[str, dict[str, float]]:
    """``{path: {figure: value}}`` from a ContinualEvaluation: the record's scalar figures (those it
    could measure) plus ``new_task_accuracy``, the last entry of the accuracy matrix's last row."""
    record = evaluation.record
    out: dict[str, dict[str, float]] = {}
    for path, values in record.summary().items():
        scalars = {k: float(v) for k, v in values.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "tasks"}
        rows = record.matrices[path].rows
        if rows and rows[-1]:
            scalars["new_task_accuracy"] = float(rows[-1][-1])
        out[str(path)] = scalars
    return out
