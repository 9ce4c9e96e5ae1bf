"""The job runner's state machine: recovery after a crash, queue bound, cancellation, idempotency."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from service.errors import InvalidRequest, ResourceExhausted
from service.jobs import (
    INTERRUPTED,
    ONE_CLASS_FIRST_TASK,
    Job,
    JobContext,
    JobRunner,
    TrainingOutcome,
    Upload,
    task_warnings,
)
from service.metrics import ServiceMetrics
from service.store import StateStore


def _upload(request_id: str, names: tuple[str, ...] = ("a",), digest: str = "d") -> Upload:
    return Upload(request_id=request_id, digest=digest, class_names=names, train=[], held_out=[])


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    s = StateStore(tmp_path)
    s.open()
    yield s
    s.close()


def test_recovery_marks_interrupted_jobs(store: StateStore) -> None:
    for job_id, state in (("running", "running"), ("queued", "queued"), ("committed", "running"),
                          ("done", "succeeded")):
        store.write_job(Job(job_id=job_id, request_id=job_id, digest="", class_names=("x",), state=state).to_dict())
    runner = JobRunner(store, ServiceMetrics(), lambda j, u, c: TrainingOutcome("succeeded", {}, ()), max_queued=1)
    changed = {j.job_id: j for j in runner.recover({"committed": 4})}
    assert set(changed) == {"running", "queued", "committed"}
    assert changed["running"].state == "failed" and changed["running"].message == INTERRUPTED
    assert changed["committed"].state == "succeeded" and changed["committed"].committed_version == 4
    on_disk = {d["job_id"]: d["state"] for d in store.read_jobs()}
    assert on_disk == {"running": "failed", "queued": "failed", "committed": "succeeded", "done": "succeeded"}


def test_queue_bound_cancel_and_idempotency(store: StateStore) -> None:
    release = threading.Event()
    started = threading.Event()

    def train(job: Job, upload: Upload, ctx: JobContext) -> TrainingOutcome:
        started.set()
        release.wait(30)
        return TrainingOutcome("succeeded", {"av": {"last_accuracy": 90.0}}, (2,), committed_version=1)

    runner = JobRunner(store, ServiceMetrics(), train, max_queued=1)
    runner.start()
    first, dup = runner.submit(_upload("r1", ("a",)), known_classes=[])
    assert not dup and started.wait(30)
    second, _ = runner.submit(_upload("r2", ("b",)), known_classes=[])
    with pytest.raises(ResourceExhausted):
        runner.submit(_upload("r3", ("c",)), known_classes=[])
    with pytest.raises(InvalidRequest, match="already being learned"):
        runner.submit(_upload("r4", ("a",)), known_classes=[])
    with pytest.raises(InvalidRequest, match="already exist"):
        runner.submit(_upload("r5", ("old",)), known_classes=["old"])
    again, dup = runner.submit(_upload("r1", ("a",)), known_classes=[])
    assert dup and again.job_id == first.job_id
    with pytest.raises(InvalidRequest, match="different upload"):
        runner.submit(_upload("r1", ("a",), digest="other"), known_classes=[])
    assert runner.cancel(second.job_id).state == "cancelled"
    release.set()
    final = list(runner.watch(first.job_id, lambda: True))[-1]
    assert final.state == "succeeded" and final.committed_version == 1 and final.held_out_per_task == (2,)
    runner.close(timeout=10)


def test_a_first_task_of_one_class_is_accepted_with_a_warning(store: StateStore) -> None:
    release = threading.Event()

    def train(job: Job, upload: Upload, ctx: JobContext) -> TrainingOutcome:
        release.wait(30)
        return TrainingOutcome("succeeded", {}, (), committed_version=1)

    runner = JobRunner(store, ServiceMetrics(), train, max_queued=4)
    runner.start()
    try:
        first, _ = runner.submit(_upload("r1", ("a",)), known_classes=[])
        assert first.warnings == (ONE_CLASS_FIRST_TASK,)
        assert [d["warnings"] for d in store.read_jobs()] == [[ONE_CLASS_FIRST_TASK]]  # kept with the job
        behind, _ = runner.submit(_upload("r2", ("b",)), known_classes=[])  # learns on top of "a"
        assert behind.warnings == ()
        later, _ = runner.submit(_upload("r3", ("c",)), known_classes=["x", "y"])
        assert later.warnings == ()
    finally:
        release.set()
        runner.close(timeout=10)
    assert task_warnings(("a", "b"), [], []) == ()  # a first task of two classes: nothing to say
    assert task_warnings(("c",), ["x", "y"], []) == ()  # classes already served: not the first task
    assert task_warnings(("c",), [], []) == (ONE_CLASS_FIRST_TASK,)
    assert task_warnings(("c",), [], [], learner_trains=False) == ()  # zero-shot: nothing is trained


def test_a_warning_found_when_a_job_starts_is_added_once_and_written_at_once(store: StateStore) -> None:
    on_disk_while_running: list[dict] = []

    def train(job: Job, upload: Upload, ctx: JobContext) -> TrainingOutcome:
        ctx.check_task_warnings(known_classes=[])  # nothing is served now
        ctx.check_task_warnings(known_classes=[])  # found twice, kept once
        on_disk_while_running.extend(store.read_jobs())
        return TrainingOutcome("succeeded", {}, (), committed_version=1)

    runner = JobRunner(store, ServiceMetrics(), train, max_queued=4)
    runner.start()
    try:
        job, _ = runner.submit(_upload("r1", ("a",)), known_classes=["x", "y"])
        assert job.warnings == ()  # not the first task when accepted
        final = list(runner.watch(job.job_id, lambda: True))[-1]
    finally:
        runner.close(timeout=10)
    assert final.state == "succeeded" and final.warnings == (ONE_CLASS_FIRST_TASK,)
    (record,) = on_disk_while_running
    assert record["state"] == "running" and record["warnings"] == [ONE_CLASS_FIRST_TASK]


def test_a_job_that_became_the_first_task_is_warned_when_it_starts(store: StateStore) -> None:
    seen: list[tuple[str, ...]] = []

    def train(job: Job, upload: Upload, ctx: JobContext) -> TrainingOutcome:
        ctx.check_task_warnings(known_classes=[])  # nothing is served: the job ahead did not commit
        seen.append(runner.get(job.job_id).warnings)
        return TrainingOutcome("rejected", {}, ())

    runner = JobRunner(store, ServiceMetrics(), train, max_queued=4)
    ahead, _ = runner.submit(_upload("r1", ("a", "b")), known_classes=[])
    behind, _ = runner.submit(_upload("r2", ("c",)), known_classes=[])
    assert behind.warnings == ()  # accepted behind a first task of two classes
    runner.start()
    try:
        final = list(runner.watch(behind.job_id, lambda: True))[-1]
    finally:
        runner.close(timeout=10)
    assert seen == [(), (ONE_CLASS_FIRST_TASK,)]  # the two-class job ahead: nothing to say
    assert final.warnings == (ONE_CLASS_FIRST_TASK,)


def test_a_learner_that_does_not_train_gets_no_one_class_warning(store: StateStore) -> None:
    runner = JobRunner(store, ServiceMetrics(), lambda j, u, c: TrainingOutcome("succeeded", {}, ()),
                       max_queued=4, learner_trains=False)
    runner.start()
    try:
        job, _ = runner.submit(_upload("r1", ("a",)), known_classes=[])
        assert job.warnings == ()
    finally:
        runner.close(timeout=10)


def test_jobs_written_before_warnings_existed_read_with_none() -> None:
    data = Job(job_id="j", request_id="r", digest="", class_names=("x",)).to_dict()
    del data["warnings"]
    assert Job.from_dict(data).warnings == ()


def test_the_running_jobs_phase_and_progress_are_published(store: StateStore) -> None:
    from model.training import TrainingProgress

    metrics = ServiceMetrics()
    seen: dict[str, float | None] = {}

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    def train(job: Job, upload: Upload, ctx: JobContext) -> TrainingOutcome:
        ctx.phase("preparing")
        seen["preparing"] = value("mcil_job_phase", phase="preparing")
        ctx.progress(TrainingProgress(phase="training", epoch=1, epochs=2, step=3, steps=10, loss=0.25))
        seen["training"] = value("mcil_job_phase", phase="training")
        seen["preparing after"] = value("mcil_job_phase", phase="preparing")
        seen["step"], seen["steps"], seen["loss"] = value("mcil_job_step"), value("mcil_job_steps"), value("mcil_job_loss")
        return TrainingOutcome("succeeded", {}, ())

    runner = JobRunner(store, metrics, train, max_queued=1)
    runner.start()
    job, _ = runner.submit(_upload("r"), known_classes=())
    for _ in runner.watch(job.job_id, lambda: True):
        pass
    runner.close(timeout=5)
    assert seen == {"preparing": 1.0, "training": 1.0, "preparing after": 0.0, "step": 3.0, "steps": 10.0,
                    "loss": 0.25}
    assert value("mcil_job_phase", phase="training") == 0.0 and value("mcil_job_step") == 0.0  # the job ended
