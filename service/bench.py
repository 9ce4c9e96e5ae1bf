"""``python -m service.bench``: Classify latency and throughput with and without dynamic batching.

Starts a daemon in this process on loopback (a temporary state directory), teaches it one task of
synthetic classes (reporting how long learning took, end to end: upload, training, evaluation,
commit), then drives Classify from ``--clients`` concurrent clients, each sending ``--requests``
single-sample requests, once with dynamic batching and once without (the same committed version,
reloaded). Reports p50/p99 latency and requests per second. Not a test: numbers depend on the machine.

    python -m service.bench --preset lite --clients 8 --requests 25
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence


def _batch_sizes(metrics: Any) -> float:
    hist = metrics["mcil_classify_batch_size"]
    values = {s.name: s.value for m in hist.collect() for s in m.samples}
    count = values.get("mcil_classify_batch_size_count", 0.0)
    return float(values.get("mcil_classify_batch_size_sum", 0.0) / count) if count else 0.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="lite")
    parser.add_argument("--classes", type=int, default=3, help="classes in the task learned first")
    parser.add_argument("--per-class", type=int, default=30, help="examples per class")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=25, help="requests per client")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-delay-ms", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=1, help="batches computed at the same time")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    from model.synthetic import make_dataset
    from service._proto import mcil_pb2
    from service.classify_speed import drive
    from service.client import Client, sample_from_arrays
    from service.config_loader import load_config
    from service.server import create_server

    names = [f"class{i}" for i in range(args.classes)]
    data = make_dataset(names, args.per_class, seed=0, image_size=64)
    probe = make_dataset(names, 4, seed=1, image_size=64)
    probe_samples = [sample_from_arrays(s.image, s.audio, s.sample_rate) for s in probe]
    results: dict[str, Any] = {"preset": args.preset, "clients": args.clients, "requests_per_client": args.requests}

    with tempfile.TemporaryDirectory(prefix="mcil-bench-") as state:
        # The hybrid path both ways: a background compile would share the CPU with one row and not the other
        # (python -m service.classify_speed measures compiled versions).
        base = {"server.preset": args.preset, "server.listen": "127.0.0.1:0", "server.metrics_listen": None,
                "server.compiled": False,
                "server.state_dir": state, "server.log_level": "WARNING",
                "batching.max_batch_size": args.max_batch_size, "batching.max_delay_ms": args.max_delay_ms,
                "batching.workers": args.workers}
        for batching in (True, False):
            started = time.perf_counter()
            server, port = create_server(load_config(None, {**base, "batching.enabled": batching}))
            startup = time.perf_counter() - started
            target = f"127.0.0.1:{port}"
            try:
                if batching:
                    with Client(target, timeout=3600) as client:
                        started = time.perf_counter()
                        msgs = [mcil_pb2.LabeledExample(label=s.label,
                                                        sample=sample_from_arrays(s.image, s.audio, s.sample_rate))
                                for s in data]
                        reply = client.learn(names, msgs)
                        job = client.wait(reply.job_id, timeout=3600)
                        results["learn_seconds"] = time.perf_counter() - started
                        results["learn_examples"] = len(data)
                        results["learn_state"] = mcil_pb2.JobState.Name(job.state)
                        results["train_seconds"] = job.finished_at - job.started_at
                    results["startup_seconds"] = startup
                key = "batching" if batching else "no_batching"
                results[key] = drive(target, probe_samples, args.clients, args.requests)
                results[key]["mean_batch_size"] = _batch_sizes(server.daemon.metrics) if batching else 1.0
            finally:
                server.stop(1.0)

    print(f"preset {args.preset}: learning one task of {args.classes} classes x {args.per_class} examples "
          f"took {results['learn_seconds']:.1f} s end to end ({results['learn_state']})")
    print(f"Classify ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}), {args.clients} concurrent clients x {args.requests} single-sample requests:")
    for key, label in (("batching", f"dynamic batching (max {args.max_batch_size}, {args.max_delay_ms:g} ms, "
                                  f"{args.workers} worker{'s' if args.workers > 1 else ''})"),
                       ("no_batching", "no batching")):
        r = results[key]
        print(f"  {label:40s} p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  "
              f"{r['pairs_per_second']:7.1f} req/s  mean batch {r['mean_batch_size']:.1f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
