"""How the ``mcil`` CLI shows a job: its phases as they pass, a bar while it trains, its figures at the end.

:func:`follow` watches a job to its end (``mcil learn``, ``mcil job ID --watch``): a line per phase
with how long the one before took, a training bar with the loss, then the outcome, the figures per
modality path and one legend saying what they mean (docs/metrics.md).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Set
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service._proto import mcil_pb2
    from service.client import Client


def state_name(state: int) -> str:
    from service._proto import mcil_pb2

    return str(mcil_pb2.JobState.Name(state)).removeprefix("JOB_STATE_").lower()


def phase_name(phase: int) -> str:
    from service._proto import mcil_pb2

    return str(mcil_pb2.JobPhase.Name(phase)).removeprefix("JOB_PHASE_").lower()


def print_metrics(metrics: "mcil_pb2.JobMetrics", indent: str = "  ") -> None:
    for path in ("av", "visual", "audio"):
        if path in metrics.paths:
            f = metrics.paths[path]
            print(f"{indent}{path:6s} new task {f.new_task_accuracy:5.1f}%  last {f.last_accuracy:5.1f}%  "
                  f"avg {f.average_accuracy:5.1f}%  forgetting {f.forgetting:5.1f}  BWT {f.bwt:+.1f}  "
                  f"FWT {f.fwt:+.1f}  M1 {f.m1:.1f}  M2 {f.m2:.3f}")


def print_warnings(job: Any, skip: Set[str] = frozenset()) -> None:
    for warning in job.warnings:
        if warning not in skip:
            print(f"warning: {warning}", file=sys.stderr)


PHASE_WORDS = {
    "queued": "waiting for the job ahead",
    "preparing": "preparing (checking the upload, encoding its examples)",
    "evaluating": "evaluating every learned task on its held-out examples",
    "committing": "committing the new version",
}

FIGURES_LEGEND = (
    "  new task: accuracy on the classes just taught; last: on every class so far; avg: mean of the\n"
    "  accuracy after each task; forgetting: mean drop (points) of earlier tasks from their best;\n"
    "  BWT/FWT: how learning changed earlier tasks / how much was known of a task before it was taught;\n"
    "  M1, M2: the MCIL paper's combined figures (docs/metrics.md)."
)


def follow(client: "Client", job_id: str, quiet: bool) -> int:
    """Follow a job to its end: a line per phase with how long the one before took, a bar while it
    trains, then the outcome and its figures (with what they mean)."""
    from tqdm import tqdm

    from service._proto import mcil_pb2

    bar: Any = None
    final = None
    last_phase = None
    phase_started = started = time.monotonic()
    warned: set[str] = set()
    for job in client.watch(job_id):
        # The daemon's warnings come with the job when it is accepted, or when it starts.
        print_warnings(job, skip=warned)
        warned.update(job.warnings)
        final = job
        if job.phase != last_phase:
            now = time.monotonic()
            if bar is not None:
                bar.close()
                bar = None
            if not quiet and last_phase is not None:
                print(f"    ({now - phase_started:.0f} s)", file=sys.stderr)
            phase_started = now
            name = phase_name(job.phase)
            if not quiet and job.phase not in (mcil_pb2.JOB_PHASE_TRAINING, mcil_pb2.JOB_PHASE_DONE):
                print(f"  {PHASE_WORDS.get(name, name)} ...", file=sys.stderr)
        if job.phase == mcil_pb2.JOB_PHASE_TRAINING and job.steps:
            if bar is None:
                bar = tqdm(total=job.steps, unit="step", desc="  training", disable=quiet)
            bar.n = job.step
            loss = f"{job.loss:.3f}" if job.HasField("loss") else "-"
            bar.set_postfix_str(f"epoch {job.epoch}/{job.epochs} loss {loss}", refresh=False)
            bar.refresh()
        last_phase = job.phase
    if bar is not None:
        bar.close()
    assert final is not None
    print(f"job {job_id}: {state_name(final.state)}" + (f" ({final.message})" if final.message else "")
          + f" in {time.monotonic() - started:.0f} s")
    if final.committed_version:
        print(f"  serving version {final.committed_version}")
    if final.metrics.paths:
        print_metrics(final.metrics)
        if not quiet:
            print(FIGURES_LEGEND)
    return 0 if final.state == mcil_pb2.JOB_STATE_SUCCEEDED else 1
