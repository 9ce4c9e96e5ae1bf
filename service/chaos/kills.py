"""kill -9 trials: learn, kill the daemon at a random or chosen moment, restart, check one story.

Each trial submits a learning job (two new classes) and kills the daemon:

    random                    at a uniformly random moment of the job
    phase:<phase>             as soon as WatchJob reports the phase (preparing, training, evaluating,
                              committing; with ``mcil`` only a first task trains, so a training kill
                              lands only there: ``--strategy mcil-paper`` trains every task)
    failpoint:<point>         the daemon kills itself there (service/failpoints.py), e.g. between a
                              version's rename and the move of ``current``

then starts it again on the same state directory and checks (:func:`check_state`) that the version
directory, ``current``, the job records and retention agree, and that no version the client saw
committed was lost. Trials run one after another on one state directory, so every trial also
checks what all the earlier ones left.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import grpc

from service._proto import mcil_pb2
from service.chaos.process import FAST_SETTINGS, DaemonProcess
from service.failpoints import POINTS

ENDED = {mcil_pb2.JOB_STATE_SUCCEEDED, mcil_pb2.JOB_STATE_REJECTED, mcil_pb2.JOB_STATE_FAILED,
         mcil_pb2.JOB_STATE_CANCELLED}
PHASES = {"preparing": mcil_pb2.JOB_PHASE_PREPARING, "training": mcil_pb2.JOB_PHASE_TRAINING,
          "evaluating": mcil_pb2.JOB_PHASE_EVALUATING, "committing": mcil_pb2.JOB_PHASE_COMMITTING}


@dataclass
class KillReport:
    trials: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    landed: dict[str, int] = field(default_factory=dict)  # kills that hit the moment aimed at, by kind
    failed_starts: int = 0
    inconsistent: int = 0  # trials after which check_state found a problem
    lost_versions: int = 0  # versions a client saw committed that are gone (not by retention)
    commit_window: int = 0  # kills that landed between a version's rename and `current`
    problems: list[str] = field(default_factory=list)


@dataclass
class History:
    """What clients were told: job id -> the committed version they saw (0: not seen committed)."""

    seen_committed: dict[str, int] = field(default_factory=dict)


def plan_trials(trials: int, commit_window: int, rng: random.Random) -> list[str]:
    """``commit_window`` kills at commit.after_rename, one of each other point and phase, the rest random."""
    fixed = ["failpoint:commit.after_rename"] * commit_window
    fixed += [f"failpoint:{p}" for p in POINTS if p != "commit.after_rename"]
    fixed += [f"phase:{p}" for p in ("preparing", "training", "evaluating", "committing")]
    plan = fixed[:trials] + ["random"] * max(0, trials - len(fixed))
    rng.shuffle(plan)
    return plan


def check_state(daemon: DaemonProcess, state_dir: Path, history: History, max_versions: int) -> list[str]:
    """Every way the restarted daemon's state could disagree with itself or with what clients saw."""
    c = daemon.client
    problems = []
    versions = c.list_versions()
    classes = c.list_classes()
    listed = {v.version: v for v in versions.versions}
    current_file = state_dir / "current"
    on_disk = int(current_file.read_text().strip() or 0) if current_file.exists() else 0
    if not versions.current_version == classes.model_version == on_disk:
        problems.append(f"served {classes.model_version}, ListVersions says {versions.current_version}, "
                        f"`current` says {on_disk}")
    if versions.current_version and versions.current_version not in listed:
        problems.append(f"the served version {versions.current_version} is not listed")
    current = listed.get(versions.current_version)
    if current is not None and list(current.class_names) != list(classes.class_names):
        problems.append(f"served classes {list(classes.class_names)} differ from version "
                        f"{current.version}'s {list(current.class_names)}")
    if len(listed) > max_versions:
        problems.append(f"{len(listed)} versions kept, retention is {max_versions}")
    leftovers = [p.name for p in (state_dir / "versions").glob(".tmp-*")]
    if leftovers:
        problems.append(f"leftover temporary directories {leftovers}")
    for number, info in listed.items():
        try:
            job = c.get_job(info.job_id)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                problems.append(f"GetJob({info.job_id}) of version {number}: {exc.code().name}")
            continue
        if job.state != mcil_pb2.JOB_STATE_SUCCEEDED or job.committed_version != number:
            problems.append(f"version {number} is listed but its job {info.job_id} says "
                            f"{mcil_pb2.JobState.Name(job.state)} (version {job.committed_version})")
    oldest = min(listed) if listed else versions.current_version + 1
    for job_id, seen in history.seen_committed.items():
        try:
            job = c.get_job(job_id)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                problems.append(f"GetJob({job_id}): {exc.code().name}")
            continue  # the record was pruned (jobs keep the newest records only)
        if job.state not in ENDED:
            problems.append(f"job {job_id} is still {mcil_pb2.JobState.Name(job.state)} after a restart")
        if seen and (job.state != mcil_pb2.JOB_STATE_SUCCEEDED or job.committed_version != seen):
            problems.append(f"lost: job {job_id} was seen committing version {seen}, now "
                            f"{mcil_pb2.JobState.Name(job.state)}")
        if job.state == mcil_pb2.JOB_STATE_SUCCEEDED and job.committed_version not in listed \
                and job.committed_version >= oldest:
            problems.append(f"lost: version {job.committed_version} of succeeded job {job_id} is gone "
                            f"(not by retention)")
    return problems


def _kill_at(daemon: DaemonProcess, kind: str, job_id: str, rng: random.Random, job_seconds: float,
             history: History) -> bool:
    """Kill the daemon as ``kind`` says; whether the kill landed where it was aimed."""
    if kind.startswith("failpoint:"):  # the daemon dies at the point, or the job ends without reaching it
        deadline = time.monotonic() + 120
        while daemon.alive() and time.monotonic() < deadline:
            try:
                if daemon.client.get_job(job_id).state in ENDED:
                    break
            except grpc.RpcError:
                pass  # it died between the two checks
            time.sleep(0.05)
        fired = daemon.wait_exit(timeout=1.0)
        daemon.kill()
        return fired
    if kind.startswith("phase:"):
        target = PHASES[kind.split(":", 1)[1]]
        try:
            for job in daemon.client.watch(job_id, timeout=120):
                if job.phase == target:
                    daemon.kill()
                    return True
                if job.state in ENDED:
                    break
        except grpc.RpcError:
            pass
        daemon.kill()
        return False
    time.sleep(rng.uniform(0.0, 1.5 * job_seconds))
    try:  # what a client polling at that moment would have been told
        job = daemon.client.get_job(job_id)
        if job.state == mcil_pb2.JOB_STATE_SUCCEEDED:
            history.seen_committed[job_id] = job.committed_version
    except grpc.RpcError:
        pass
    daemon.kill()
    return True


def run_kills(work: Path, trials: int, commit_window: int, *, seed: int = 0, strategy: str = "mcil",
              make_examples: Callable[[list[str], int], list[mcil_pb2.LabeledExample]],
              say: Callable[[str], None] = print) -> KillReport:
    """``trials`` kill trials on one state directory under ``work``."""
    rng = random.Random(seed)
    state = work / "state"
    settings = {"server.strategy": strategy}
    max_versions = int(FAST_SETTINGS["retention.max_versions"])
    report, history = KillReport(), History()
    job_seconds = 2.0
    for i, kind in enumerate(plan_trials(trials, commit_window, rng)):
        report.trials += 1
        report.by_kind[kind] = report.by_kind.get(kind, 0) + 1
        failpoints = kind.split(":", 1)[1] if kind.startswith("failpoint:") else ""
        try:
            daemon = DaemonProcess(state, settings=settings, failpoints=failpoints, log_path=work / "daemon.log")
        except RuntimeError as exc:
            report.failed_starts += 1
            report.problems.append(f"trial {i} ({kind}): {exc}")
            continue
        names = [f"k{i}a", f"k{i}b"]
        try:
            started = time.monotonic()
            reply = daemon.client.learn(names, make_examples(names, i))
            history.seen_committed.setdefault(reply.job_id, 0)
            landed = _kill_at(daemon, kind, reply.job_id, rng, job_seconds, history)
            if landed:
                report.landed[kind] = report.landed.get(kind, 0) + 1
            if kind == "random" and landed:
                job_seconds = max(0.5, 0.8 * job_seconds + 0.2 * (time.monotonic() - started))
            if kind == "failpoint:commit.after_rename" and landed:
                report.commit_window += 1
        finally:
            daemon.close()
        try:
            checker = DaemonProcess(state, settings=settings, log_path=work / "daemon.log")
        except RuntimeError as exc:
            report.failed_starts += 1
            report.problems.append(f"trial {i} ({kind}), restart: {exc}")
            continue
        try:
            problems = check_state(checker, state, history, max_versions)
            for job_id in list(history.seen_committed):  # what the restarted daemon tells clients now
                try:
                    job = checker.client.get_job(job_id)
                except grpc.RpcError:
                    del history.seen_committed[job_id]  # pruned record
                    continue
                if job.state == mcil_pb2.JOB_STATE_SUCCEEDED:
                    history.seen_committed[job_id] = job.committed_version
            if checker.terminate() != 0:
                problems.append("the restarted daemon did not stop cleanly on SIGTERM")
        finally:
            checker.close()
        if problems:
            report.inconsistent += 1
            report.lost_versions += sum(1 for p in problems if p.startswith("lost"))
            report.problems += [f"trial {i} ({kind}): {p}" for p in problems]
        say(f"kill trial {i + 1}/{trials} ({kind}): {'ok' if not problems else '; '.join(problems)}")
    return report
