"""``python -m service.chaos``: the daemon under kills, fuzzed bytes, floods and the largest images.

Runs real daemons (``python -m service serve``, ``tiny`` preset) on loopback and prints a table
(docs/service.md, "Chaos"):

    kill -9 trials       random moments, each job phase, and failpoints (service/failpoints.py),
                         ``--commit-window`` of them between a version's rename and ``current``
    fuzzed requests      Hypothesis-generated messages and raw bytes to every rpc
    Classify through a learn + commit, ``--clients`` clients
    stalled uploads      ``--stalls`` uploads that send a header and then nothing
    largest images       ``--images`` concurrent Classify calls with 4096 x 4096 pictures

Exit status 1 when a correctness target fails (an inconsistent state, a lost version, a failed
start, a crash, an INTERNAL or UNKNOWN answer, a state change from a refused request, a Classify
error); latency and memory are reported beside their targets, not judged (they depend on the machine).
``--quick`` is the short run CI makes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from service._proto import mcil_pb2
from service.chaos.fuzz import run_fuzz
from service.chaos.kills import run_kills
from service.chaos.load import (
    classify_through_a_commit,
    classify_through_stalled_uploads,
    memory_for_largest_images,
)
from service.chaos.process import DaemonProcess
from service.client import sample_from_arrays

FULL = {"kills": 100, "commit_window": 20, "fuzz": 10_000, "clients": 32, "stalls": 100, "images": 8}
QUICK = {"kills": 5, "commit_window": 2, "fuzz": 300, "clients": 8, "stalls": 30, "images": 2}


def labelled_examples(names: list[str], seed: int, per_class: int = 6) -> list[mcil_pb2.LabeledExample]:
    """Synthetic image + sound examples of ``names`` (model.synthetic), as upload messages."""
    from model.synthetic import make_dataset

    data = make_dataset(names, per_class, seed=seed, first_index=(2 * seed) % 40)
    return [mcil_pb2.LabeledExample(label=s.label, sample=sample_from_arrays(s.image, s.audio, s.sample_rate))
            for s in data]


def probe_sample() -> mcil_pb2.Sample:
    from model.synthetic import make_dataset

    s = make_dataset(["probe"], 1, seed=123)[0]
    return sample_from_arrays(s.image, s.audio, s.sample_rate)


def serving_state(work: Path) -> Path:
    """A state directory whose served version knows two classes."""
    state = work / "serve"
    daemon = DaemonProcess(state, log_path=work / "setup.log")
    try:
        reply = daemon.client.learn(["red", "green"], labelled_examples(["red", "green"], seed=0))
        job = daemon.client.wait(reply.job_id)
        if job.state != mcil_pb2.JOB_STATE_SUCCEEDED:
            raise RuntimeError(f"the set-up job did not commit: {job.message}")
        daemon.terminate()
    finally:
        daemon.close()
    return state


def count_tracebacks(log: Path) -> int:
    return log.read_text(errors="replace").count("Traceback") if log.exists() else 0


def campaign(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    def say(message: str) -> None:
        if not args.no_progress:
            print(message, file=sys.stderr, flush=True)

    out: dict[str, Any] = {"settings": {k: getattr(args, k) for k in FULL}}
    started = time.monotonic()
    kills = run_kills(work / "kills", args.kills, args.commit_window, seed=args.seed, strategy=args.strategy,
                      make_examples=labelled_examples, say=say)
    out["kills"] = dataclasses.asdict(kills)
    state = serving_state(work)
    fuzz_log = work / "fuzz.log"
    fuzzing = DaemonProcess(state, settings={"learning.min_examples_per_class": "1000000"}, log_path=fuzz_log)
    try:
        fuzz = run_fuzz(fuzzing.target, state, args.fuzz, seed=args.seed, alive=fuzzing.alive, say=say)
        if fuzzing.alive():
            fuzzing.terminate()
    finally:
        fuzzing.close()
    fuzz.tracebacks = count_tracebacks(fuzz_log)
    out["fuzz"] = dataclasses.asdict(fuzz)
    probe = probe_sample()
    serving = DaemonProcess(state, log_path=work / "load.log")
    try:
        say("largest images ...")
        out["images"] = dataclasses.asdict(memory_for_largest_images(serving, args.images, 4096))
        say("stalled uploads ...")
        out["stalls"] = dataclasses.asdict(classify_through_stalled_uploads(serving, probe, args.stalls, 4, 5.0))
        say("Classify through a learn + commit ...")
        names = ["blue", "yellow"]
        out["swap"] = dataclasses.asdict(classify_through_a_commit(
            serving, probe, labelled_examples(names, seed=1, per_class=150), names, args.clients, 5.0))
        serving.terminate()
    finally:
        serving.close()
    out["tracebacks_under_load"] = count_tracebacks(work / "load.log")
    out["seconds"] = round(time.monotonic() - started, 1)
    return out


def failures(r: dict[str, Any]) -> list[str]:
    """The correctness targets that failed."""
    k, f, s, w, i = r["kills"], r["fuzz"], r["stalls"], r["swap"], r["images"]
    checks = {
        "kill trials: failed starts": k["failed_starts"], "kill trials: inconsistent states": k["inconsistent"],
        "kill trials: lost versions": k["lost_versions"], "fuzz: crashes": f["crashes"],
        "fuzz: INTERNAL/UNKNOWN answers": f["bad"], "fuzz: state changes": f["state_changes"],
        "fuzz: tracebacks in the log": f["tracebacks"], "stalls: Classify errors": s["stalling"]["errors"],
        "swap: Classify errors": w["learning"]["errors"] + w["idle"]["errors"],
        "swap: the job did not commit": 0 if w["committed"] else 1, "images: errors": i["errors"],
        "tracebacks under load": r["tracebacks_under_load"],
    }
    return [f"{name}: {value}" for name, value in checks.items() if value]


def table(r: dict[str, Any]) -> str:
    k, f, s, w, i = r["kills"], r["fuzz"], r["stalls"], r["swap"], r["images"]
    codes = ", ".join(f"{c} {n}" for c, n in sorted(f["codes"].items(), key=lambda x: -x[1]))
    rows = [
        ("kill -9 at random and targeted moments of a job, restart, verify",
         f"{k['trials']} ({k['commit_window']} in the commit window, "
         f"{sum(k.get('landed', {}).values())} where aimed)",
         f"{k['failed_starts']} failed starts, {k['inconsistent']} inconsistent states, {k['lost_versions']} lost versions"),
        ("fuzzed requests (every rpc, hostile samples, raw bytes)", f"{f['requests']:,}",
         f"{f['crashes']} crashes, {f['bad']} INTERNAL/UNKNOWN, {f['state_changes']} state changes, "
         f"{f['tracebacks']} tracebacks; answers: {codes}"),
        (f"{w['clients']} Classify clients through a learn + commit", f"{w['idle']['calls'] + w['learning']['calls']:,} calls",
         f"{w['idle']['errors'] + w['learning']['errors']} errors; p99 {w['learning']['p99_ms']:.0f} ms while learning "
         f"vs {w['idle']['p99_ms']:.0f} ms idle ({w['learning']['p99_ms'] / w['idle']['p99_ms']:.1f}x; target <= 3x)"),
        ("uploads that send a header and then stall", f"{s['stalled']} streams",
         f"{s['held']} held, {s['refused']} refused (RESOURCE_EXHAUSTED); Classify p99 {s['stalling']['p99_ms']:.0f} ms "
         f"vs {s['idle']['p99_ms']:.0f} ms idle ({s['stalling']['p99_ms'] / s['idle']['p99_ms']:.1f}x; target <= 2x), "
         f"slowest health check {s['health_ms']:.0f} ms, {s['stalling']['errors']} errors"),
        (f"images at the allowed {i['side']} x {i['side']}", f"{i['images']} at once",
         f"+{i['added_mib']:.0f} MiB daemon memory (target <= 300 MB), {i['errors']} errors"),
    ]
    lines = ["| check | trials | result |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m service.chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the short run CI makes (a few of each)")
    for name, value in FULL.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, help=f"default {value} ({QUICK[name]} quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategy", default="mcil", help="the kill trials' learner (mcil-paper trains every task)")
    p.add_argument("--work", type=Path, default=None, help="keep the state directories and logs here")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    for name in FULL:
        if getattr(args, name) is None:
            setattr(args, name, (QUICK if args.quick else FULL)[name])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mcil-chaos-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = campaign(args, work)
    failed = failures(results)
    results["failures"] = failed
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\n{results['seconds']:.0f} s; " + ("correctness targets: all met" if not failed else
                                                "FAILED: " + "; ".join(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
