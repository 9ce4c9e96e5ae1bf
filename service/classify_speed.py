"""``python -m service.classify_speed``: how fast Classify answers, against the frozen network alone.

One run measures, side by side on the same machine and the same inputs:

1. in one process, per batch size (1, 8, 32 pairs): the frozen monolith (the encoders exported
   whole, no experts), the hybrid path (``Learner.predict``), the version compiled into graphs of
   its own (``CompiledVersion.predict``) and the version served as its head over its base
   (``HeadVersion.predict``, what the daemon serves), interleaved round by round
   (``export/speed.py``); whether their answers agree with the hybrid ones; where the time goes;
2. a real daemon (``python -m service serve``, a child process) that learns one task over gRPC
   (its base is built then), then a second, timing from each commit to the version being served as
   its head; then answers 1, 8 and 32 concurrent clients sending one pair per request (dynamic
   batching on), serving the head over the base, the hybrid path (``server.compiled: false``, the
   same committed version), and the head with ``batching.max_delay_ms: 5`` (the first call of a
   batch waits 5 ms for company; the default, 0, takes what queued while the last batch ran); and
   its resident memory when idle.

Inputs are AV-MNIST pairs from ``train.csv`` when the data is there (``--data``), synthetic pairs
otherwise; the learner is the default ``mcil`` after one short task (its accuracy is irrelevant
here). Not a test: the figures depend on the machine, which is written with them.

    python -m service.classify_speed --write docs/benchmarks.md --json docs/reports/speed/lite.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import torch

SECTION = "## Classify speed: compiled versions against the frozen network"
BATCHES = (1, 8, 32)
CLIENTS = (1, 8, 32)
DEFAULT_DATA = Path("../shared/data/avmnist")


def _samples(data: Path, classes: int, per_class: int, probe: int) -> tuple[list[Any], list[Any], str]:
    """``(training examples, probe pairs, where they came from)``: ``classes`` classes to learn first
    and one more (the last ``per_class`` examples) for a second task."""
    classes += 1
    from model.samples import Sample

    if (data / "train.csv").is_file():
        from model.data import read_split

        split = read_split(data, "train", limit_per_class=per_class + probe)
        names = split.class_names[:classes]
        chosen = [s for s in split.samples if s.label in names]
        train, rest = [], []
        for name in names:
            mine = [s for s in chosen if s.label == name]
            train += mine[:per_class]
            rest += mine[per_class:]
        source = f"AV-MNIST train.csv ({data})"
    else:
        from model.synthetic import make_dataset

        names = [f"class{i}" for i in range(classes)]
        train, rest = make_dataset(names, per_class, seed=0, image_size=64), make_dataset(names, probe, seed=1,
                                                                                            image_size=64)
        source = "synthetic pairs (model/synthetic.py; AV-MNIST not found)"
    pairs = [Sample(image=s.image, audio=s.audio, sample_rate=s.sample_rate) for s in rest
             if s.label != names[-1]]
    return train, pairs, source


def _first(probe: list[Any], n: int) -> list[Any]:
    """``n`` probe pairs, starting over when there are fewer."""
    return [probe[i % len(probe)] for i in range(n)]


def in_process(preset: str, train: list[Any], probe: list[Any], runs: int) -> dict[str, Any]:
    from export.base import export_base
    from export.bench import percentile
    from export.compiled import CompiledVersion
    from export.head_version import HeadVersion
    from export.speed import Monolith, graph_op_profile, image_gflop, side_by_side, stage_times
    from model.learner import create_learner
    from model.learner_config import LearnerConfig
    from model.training import TrainingConfig
    from serving.base import BaseGraphs

    config = replace(LearnerConfig(), training=TrainingConfig(epochs=1, min_steps=0))
    learner = create_learner(preset, "mcil", config=config)
    names = sorted({s.label for s in train})[:-1]  # the first task's classes
    learner.learn_task([s for s in train if s.label in names], names)
    compiled = CompiledVersion.compile(learner)
    with tempfile.TemporaryDirectory(prefix="mcil-base-") as folder:
        base_meta = export_base(learner.backbone, Path(folder))
        base = BaseGraphs.load(Path(folder), torch.get_num_threads())
        int8 = _int8_base(base, Path(folder), [s for s in train if s.label in names])
    started = time.perf_counter()
    head = HeadVersion.build(learner, base)
    head_ms = 1000 * (time.perf_counter() - started)
    head_int8 = HeadVersion.build(learner, int8[0])
    monolith = Monolith(learner, torch.get_num_threads())
    hybrid = learner.predict(probe)
    out: dict[str, Any] = {
        "compile_seconds": compiled.compile_seconds, "base_seconds": base_meta["seconds"],
        "head_build_ms": head_ms, "parity": {}, "batches": {}, "stages": {}, "image_gflop": image_gflop(learner),
        "int8": int8[1],
    }
    for name, fast in (("compiled", compiled.predict(probe)), ("head", head.predict(probe)),
                       ("head_int8", head_int8.predict(probe))):
        out["parity"][name] = {"pairs": len(probe),
                               "top1_same": sum(h.classes[0] == c.classes[0] for h, c in zip(hybrid, fast)),
                               "max_score_difference": max(abs(x - y) for h, c in zip(hybrid, fast)
                                                           for x, y in zip(h.scores, c.scores))}
    for n in BATCHES:
        batch = _first(probe, n)
        actions = {"monolith": lambda b=batch: monolith.forward(b), "hybrid": lambda b=batch: learner.predict(b),
                   "compiled": lambda b=batch: compiled.predict(b), "head": lambda b=batch: head.predict(b),
                   "head_int8": lambda b=batch: head_int8.predict(b)}
        times = side_by_side(actions, max(3, runs if n == 1 else runs // 4))
        out["batches"][str(n)] = {name: {"p50_ms": 1000 * statistics.median(t), "p99_ms": 1000 * percentile(t, 99),
                                         "per_second": n * len(t) / sum(t), "runs": len(t)}
                                  for name, t in times.items()}
    for n in (1, 32):
        batch = _first(probe, n)
        timed = max(3, runs // (4 if n > 1 else 1))
        out["stages"][str(n)] = stage_times(learner, compiled, monolith, batch, timed)
        encoded = learner.encode_inputs(batch)
        features = {"visual": base.image_features(encoded.images.numpy()), "audio": encoded.audio.numpy()}
        judge = partial(head.head.judge, features)
        out["stages"][str(n)]["head over base: head (NumPy)"] = 1000 * statistics.median(
            side_by_side({"head": judge}, timed)["head"])
    encoded = learner.encode_inputs(_first(probe, 32))
    feeds = {"images": encoded.images.numpy(), "audio": encoded.audio.numpy()}
    out["av_graph_ops_batch_32"] = graph_op_profile(compiled.graphs["av"], feeds, 3, torch.get_num_threads())
    return out


def _int8_base(base: Any, folder: Path, seen: list[Any]) -> tuple[Any, dict[str, Any]]:
    """``base`` over its int8 image graph, calibrated as a daemon calibrates it (``export/int8.py``) on
    held-out pictures of the classes learned: here the first task's training pictures."""
    from export.int8 import MAX_EXAMPLES, build_int8
    from service.store import save_examples

    (folder / "held_out").mkdir()
    save_examples(folder / "held_out" / "task.safetensors", seen[:MAX_EXAMPLES])
    info = build_int8(folder, folder / "held_out", folder / "int8", threads=torch.get_num_threads())
    return base.with_int8(folder / "int8", torch.get_num_threads()), info


def drive(target: str, samples: Sequence[Any], clients: int, requests: int) -> dict[str, float]:
    """``clients`` concurrent clients each send ``requests`` Classify calls of one sample (after one
    warm-up call each): p50 and p99 latency, and samples answered per second over all of them."""
    from export.bench import percentile
    from service.client import Client

    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def worker(index: int) -> None:
        with Client(target, timeout=120) as client:
            try:
                client.classify([samples[index % len(samples)]])
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                barrier.abort()
                return
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                return  # another client failed its first call
            mine = []
            for i in range(requests):
                started = time.perf_counter()
                try:
                    client.classify([samples[(index + i) % len(samples)]])
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)
                    return
                mine.append(time.perf_counter() - started)
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]  # one pair per request
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass  # a client failed its first call: reported below
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed; first: {errors[0]!r}")
    return {"requests": len(latencies), "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * percentile(latencies, 99), "pairs_per_second": len(latencies) / elapsed}


def _runner(daemon: Any) -> str:
    """What the daemon serves with; ``""`` while a ``--light`` daemon's learner is still starting."""
    import grpc

    try:
        return str(daemon.client.model_info().runner)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        return ""


def over_grpc(preset: str, train: list[Any], probe: list[Any], requests: int) -> dict[str, Any]:
    from service._proto import mcil_pb2
    from service.chaos.process import DaemonProcess
    from service.client import sample_from_arrays
    from service.serving import HEAD_INT8_RUNNER, HEAD_RUNNER

    names = sorted({s.label for s in train})
    msgs = {task: [mcil_pb2.LabeledExample(label=s.label, sample=sample_from_arrays(s.image, s.audio, s.sample_rate))
                   for s in train if (s.label == names[-1]) == (task == "second")] for task in ("first", "second")}
    pairs = [sample_from_arrays(s.image, s.audio, s.sample_rate) for s in probe]
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mcil-speed-") as tmp:
        state = Path(tmp) / "state"
        settings = {"learning.epochs": "1", "learning.min_steps": "0", "learning.batch_size": "16",
                    "server.light": "false"}  # one process; light: the light_int8 row and service/light_speed.py
        daemon = DaemonProcess(state, preset=preset, settings=settings, log_path=Path(tmp) / "learn.log",
                               start_timeout=600)
        try:
            out["idle_rss_mib_before_learning"] = daemon.resident_kib() / 1024
            for task, classes in (("first", names[:-1]), ("second", names[-1:])):
                job = daemon.client.wait(daemon.client.learn(classes, msgs[task]).job_id, timeout=3600)
                if job.state != mcil_pb2.JOB_STATE_SUCCEEDED:
                    raise RuntimeError(f"the {task} task was not committed: {job.message}")
                committed = time.perf_counter()  # the client has seen the job succeed
                while True:  # the first version over a base waits for the base to be built
                    info = daemon.client.model_info()
                    if info.runner == HEAD_RUNNER and info.version == job.committed_version:
                        break
                    if time.perf_counter() - committed > 900:
                        raise RuntimeError(f"the version was not served as its head within 15 min:\n"
                                           f"{daemon.log_tail()}")
                    time.sleep(0.01)
                out[f"served_after_{task}_commit_seconds"] = time.perf_counter() - committed
            time.sleep(2)
            out["idle_rss_mib_after_learning"] = daemon.resident_kib() / 1024
        finally:
            daemon.close()
        modes = (("head", {"server.compiled": "true"}, HEAD_RUNNER), ("hybrid", {"server.compiled": "false"}, "pytorch"),
                 ("head_wait_5ms", {"server.compiled": "true", "batching.max_delay_ms": "5"}, HEAD_RUNNER),
                 ("head_int8", {"server.compiled": "true", "server.base_precision": "int8"}, HEAD_INT8_RUNNER),
                 ("light_int8", {"server.compiled": "true", "server.base_precision": "int8", "server.light": "true",
                                 "server.learner_idle_seconds": "null"},  # the learner stays up through the run
                  HEAD_INT8_RUNNER))
        for mode, overrides, expected in modes:
            daemon = DaemonProcess(state, preset=preset, settings={**settings, **overrides},
                                   log_path=Path(tmp) / f"{mode}.log", start_timeout=600)
            try:
                started = time.perf_counter()  # int8: the daemon builds its int8 image graph after start
                while (runner := _runner(daemon)) != expected and time.perf_counter() - started < 120:
                    time.sleep(0.2)
                if runner != expected:
                    raise RuntimeError(f"the {mode} daemon serves with {runner!r}:\n{daemon.log_tail()}")
                time.sleep(2)
                rss_start = daemon.resident_kib() / 1024
                rows = {str(c): drive(daemon.target, pairs, c, requests if c > 1 else 2 * requests) for c in CLIENTS}
                time.sleep(2)
                out[mode] = {"runner": runner, "idle_rss_mib_after_start": rss_start,
                             "idle_rss_mib_after_serving": daemon.resident_kib() / 1024, "clients": rows}
            finally:
                daemon.close()
    return out


_FOOTPRINT = """
import sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
steps = [("python", rss())]
import torch
steps.append(("import torch", rss()))
import grpc, onnxruntime, timm, transformers
steps.append(("import grpc, onnxruntime, timm, transformers", rss()))
from model.backbone import build_backbone
backbone = build_backbone(sys.argv[1])
steps.append(("build the backbone", rss()))
print(repr(steps))
"""


def memory_footprint(preset: str) -> list[tuple[str, float]]:
    """Resident MiB of a fresh Python process after each step of what the daemon loads first."""
    import ast
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _FOOTPRINT, preset], capture_output=True, text=True, check=True)
    steps: list[tuple[str, float]] = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    return steps


def machine() -> str:
    from export.bench import cpu_name

    return f"{os.cpu_count()} CPU cores ({cpu_name()}), {torch.get_num_threads()} PyTorch threads, no GPU used"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.classify_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="lite")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="AV-MNIST folder (synthetic pairs if absent)")
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=30, help="training examples per class")
    parser.add_argument("--runs", type=int, default=40, help="timed calls at batch 1 (a quarter of it at 8 and 32)")
    parser.add_argument("--requests", type=int, default=20, help="requests per gRPC client (twice that for one)")
    parser.add_argument("--skip-grpc", action="store_true", help="only the in-process measurements")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--write", type=Path, help="replace this benchmark's section of a Markdown file")
    args = parser.parse_args(argv)

    from export.bench import write_section
    from service.classify_speed_report import render

    started = time.perf_counter()
    train, probe, source = _samples(args.data, args.classes, args.per_class, probe=11)
    results: dict[str, Any] = {"preset": args.preset, "machine": machine(), "inputs": source,
                               "load_average_at_start": os.getloadavg()[0]}
    results["in_process"] = in_process(args.preset, train, probe, args.runs)
    if not args.skip_grpc:
        results["grpc"] = over_grpc(args.preset, train, probe, args.requests)
        results["footprint"] = memory_footprint(args.preset)
    results["seconds"] = time.perf_counter() - started
    results["load_average_at_end"] = os.getloadavg()[0]
    command = "python -m service.classify_speed" + (f" --preset {args.preset}" if args.preset != "lite" else "")
    text = render(results, command)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    if args.write:
        write_section(args.write, f"{SECTION}\n\n{text}", heading=SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
