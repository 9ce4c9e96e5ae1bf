"""``python -m service.light_speed``: the light daemon (a serving process without PyTorch), measured.

One run, a real ``lite`` daemon on its default (light, the learner on the CPU), its serving process
and its learner child on loopback, AV-MNIST pairs from
``train.csv`` (``--data``): after one task is learned and served, the resident memory of both
processes when idle; Classify over gRPC from 1 client (p50, p99) when idle and while the learner
learns a second task, and pairs/s from 8 clients; then, with the learner put to sleep
(``server.learner_idle_seconds``, ``--learner-idle``), the daemon's idle memory and how long the next
call that needs the learner takes to answer. Not a test: the figures depend on the machine, which is
written with them.

    python -m service.light_speed --json docs/reports/speed/light.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from service.classify_speed import DEFAULT_DATA, _samples, drive


def _rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (started by any of its threads): its learner, or none while it sleeps."""
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def _learner(pid: int) -> int:
    """The learner child of serving process ``pid``."""
    return _children(pid)[0]


def _until(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:g} s")
        time.sleep(0.2)


def measure(data: Path, requests: int, learner_idle: float) -> dict[str, Any]:
    from export.bench import percentile
    from service._proto import mcil_pb2
    from service.chaos.process import DaemonProcess
    from service.client import Client, sample_from_arrays

    train, probe, source = _samples(data, 3, 30, probe=11)
    names = sorted({s.label for s in train})
    upload = {task: [mcil_pb2.LabeledExample(label=s.label, sample=sample_from_arrays(s.image, s.audio, s.sample_rate))
                     for s in train if (s.label == names[-1]) == (task == "second")] for task in ("first", "second")}
    pairs = [sample_from_arrays(s.image, s.audio, s.sample_rate) for s in probe]
    out: dict[str, Any] = {"inputs": source}
    with tempfile.TemporaryDirectory(prefix="mcil-light-") as tmp:
        daemon = DaemonProcess(Path(tmp) / "state", preset="lite",
                               settings={"server.device": "cpu", "server.learner_idle_seconds": str(learner_idle)},
                               log_path=Path(tmp) / "light.log", start_timeout=600)
        try:
            client = daemon.client
            deadline = time.monotonic() + 600
            while True:
                try:
                    client.model_info()
                    break
                except Exception:  # noqa: BLE001 - the learner is starting
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            job = client.wait(client.learn(names[:-1], upload["first"]).job_id, timeout=3600)
            if job.state != mcil_pb2.JOB_STATE_SUCCEEDED:
                raise RuntimeError(f"the first task was not committed: {job.message}")
            committed = time.perf_counter()  # the client has seen the job succeed
            answer = client.classify(pairs[:1])  # the learner answers until the head is served here
            out["first_answer_after_commit"] = {"ms": (time.perf_counter() - committed) * 1000,
                                                "version": answer.model_version}
            swapped = f"service.light_heads: serving version {job.committed_version} "
            while swapped not in daemon.log_tail(200):  # the first version over a base waits for the base
                if time.perf_counter() - committed > 900:
                    raise RuntimeError(f"version {job.committed_version} was not served light within 15 min")
                time.sleep(0.05)
            out["served_light_after_commit_seconds"] = time.perf_counter() - committed
            client.model_info()  # the learner up (a call that needs it wakes it) and its idle time from now
            time.sleep(2)
            out["idle_rss_mib"] = {"serving": _rss_mib(daemon.pid), "learner": _rss_mib(_learner(daemon.pid))}
            out["idle_1_client"] = drive(daemon.target, pairs, 1, 2 * requests)
            out["idle_8_clients"] = drive(daemon.target, pairs, 8, requests)
            latencies: list[float] = []
            stop = threading.Event()

            def during() -> None:
                with Client(daemon.target, timeout=120) as c:
                    while not stop.is_set():
                        started = time.perf_counter()
                        c.classify([pairs[len(latencies) % len(pairs)]])
                        latencies.append(time.perf_counter() - started)

            client.model_info()  # the learner up, as before the first figures
            thread = threading.Thread(target=during)
            started = time.perf_counter()
            thread.start()
            job = client.wait(client.learn(names[-1:], upload["second"]).job_id, timeout=3600)
            stop.set()
            thread.join()
            out["while_learning_1_client"] = {"requests": len(latencies), "seconds": time.perf_counter() - started,
                                              "p50_ms": 1000 * statistics.median(latencies),
                                              "p99_ms": 1000 * percentile(latencies, 99)}
            out["second_task"] = job.state == mcil_pb2.JOB_STATE_SUCCEEDED
            out["learner_peak_rss_mib"] = _rss_mib(_learner(daemon.pid), "VmHWM")
            asleep_from = time.monotonic()
            _until("the learner sleeps", lambda: not _children(daemon.pid), learner_idle + 120)
            out["learner_idle_seconds"] = learner_idle
            out["asleep_after_seconds"] = time.monotonic() - asleep_from
            time.sleep(2)
            out["asleep_rss_mib"] = _rss_mib(daemon.pid)
            out["asleep_classify"] = drive(daemon.target, pairs, 1, requests)
            started = time.perf_counter()
            client.model_info()  # wakes the learner: answered once it listens
            out["wake_seconds"] = time.perf_counter() - started
            out["woken_rss_mib"] = _rss_mib(_learner(daemon.pid))
        finally:
            daemon.terminate()
            daemon.close()
    return out


def render(r: dict[str, Any]) -> str:
    idle, busy, eight = r["idle_1_client"], r["while_learning_1_client"], r["idle_8_clients"]
    first = r["first_answer_after_commit"]
    return "\n".join([
        f"Measured with `python -m service.light_speed` on: {r['machine']}; inputs: {r['inputs']}.", "",
        "| | serving process | learner child |", "| --- | --- | --- |",
        f"| resident when idle (VmRSS) | {r['idle_rss_mib']['serving']:.0f} MiB | {r['idle_rss_mib']['learner']:.0f} MiB |",
        f"| peak after two tasks (VmHWM) | | {r['learner_peak_rss_mib']:.0f} MiB |",
        "", "| Classify over gRPC, one pair a request | p50 | p99 | pairs/s |", "| --- | --- | --- | --- |",
        f"| 1 client, idle | {idle['p50_ms']:.1f} ms | {idle['p99_ms']:.1f} ms | {idle['pairs_per_second']:.0f} |",
        f"| 1 client, while the learner learns a task ({busy['seconds']:.0f} s, {busy['requests']} requests) | "
        f"{busy['p50_ms']:.1f} ms | {busy['p99_ms']:.1f} ms | |",
        f"| 8 clients, idle | {eight['p50_ms']:.1f} ms | {eight['p99_ms']:.1f} ms | {eight['pairs_per_second']:.0f} |",
        "", f"p99 while learning / p99 idle: {busy['p99_ms'] / idle['p99_ms']:.2f} (target <= 2).", "",
        f"Right after the first task's commit, a Classify answered with version {first['version']} in "
        f"{first['ms']:.0f} ms (the learner answers until the version is served light); the serving process "
        f"served it {r['served_light_after_commit_seconds']:.1f} s after the commit (the first version over a base "
        "waits for the base to be built).", "",
        f"With `server.learner_idle_seconds: {r['learner_idle_seconds']:g}`, the learner slept "
        f"{r['asleep_after_seconds']:.1f} s after the second task's last call; then the daemon held "
        f"{r['asleep_rss_mib']:.0f} MiB (the serving process alone), one client's Classify p50 / p99 "
        f"{r['asleep_classify']['p50_ms']:.1f} / {r['asleep_classify']['p99_ms']:.1f} ms, and the next call that "
        f"needs the learner (GetModelInfo) answered after {r['wake_seconds']:.1f} s (the learner's start; it "
        f"then held {r['woken_rss_mib']:.0f} MiB).", ""])


def main(argv: Sequence[str] | None = None) -> int:
    from export.bench import cpu_name

    parser = argparse.ArgumentParser(prog="python -m service.light_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="AV-MNIST folder (synthetic pairs if absent)")
    parser.add_argument("--requests", type=int, default=20, help="requests per client (twice that for one)")
    parser.add_argument("--learner-idle", type=float, default=10.0,
                        help="server.learner_idle_seconds for the run (default 10)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = measure(args.data, args.requests, args.learner_idle)
    results["machine"] = f"{os.cpu_count()} CPU cores ({cpu_name()}), no GPU used"
    print(render(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
