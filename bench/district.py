"""The district benchmark: rooms taught apart, one Flower round, every room against the central head.

    python -m bench.district --data ../shared/data/avmnist --preset lite --out docs/reports/district/avmnist.json
    python -m bench.district --data ../shared/data/esc-cifar --preset lite --out docs/reports/district/esc-cifar.json

Rooms are the data set's ``speaker`` column (AV-MNIST: five speakers; ESC-CIFAR: three recording
folds). Each room is a real daemon (in this process, on loopback, with a token) that teaches, in two
uploads, a seeded share of the classes from its own speaker's or fold's training pairs, in its own
order; every fifth pair of a class is marked held out. Then one district round runs on Flower's
deployment engine (district/local.py: a SuperLink and a SuperNode per room, TLS and SuperNode
authentication on). Reported, on ``test.csv`` (fused answers, every class):

    per room     accuracy before and after the round; bytes sent and received; the install's outcome
    central      a learner taught every room's training pairs at once (the head the rooms should equal),
                 and the largest relative difference between its scores and each room's, per path
    unknown      the share of test pairs (every class known after the round) each room and the central
                 learner answer ``unknown``: a merged class keeps the thresholds its rooms computed
    round        its time for all rooms on loopback, and the SuperLink's peak memory (VmHWM)
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from model.backbone import build_backbone
from model.data import read_split
from model.learner import Learner, create_learner
from model.samples import LabeledSample


def room_plan(domains: list[str], class_names: list[str], share: float, seed: int) -> dict[str, list[list[str]]]:
    """Per room (domain), two uploads of classes: a seeded ``share`` of the classes in the room's own
    order; every class is taught by at least one room."""
    rng = random.Random(seed)
    rooms = sorted(set(domains))
    plan: dict[str, list[str]] = {}
    for room in rooms:
        order = rng.sample(class_names, len(class_names))
        plan[room] = order[:max(2, round(share * len(class_names)))]
    for i, name in enumerate(n for n in class_names if not any(n in p for p in plan.values())):
        plan[rooms[i % len(rooms)]].append(name)
    return {room: [names[:len(names) // 2], names[len(names) // 2:]] for room, names in plan.items()}


def uploads_of(samples: list[LabeledSample], domains: list[str], room: str,
               tasks: list[list[str]]) -> list[tuple[list[str], list[LabeledSample], list[bool]]]:
    """The room's uploads: its own domain's pairs of each task's classes, every fifth of a class held out."""
    out = []
    for names in tasks:
        data = [s for s, d in zip(samples, domains) if d == room and s.label in names]
        seen: dict[str, int] = {}
        held = []
        for s in data:
            seen[s.label] = seen.get(s.label, 0) + 1
            held.append(seen[s.label] % 5 == 0)
        out.append((names, data, held))
    return out


def central_learner(preset: str, backbone: Any, uploads: list[tuple[list[str], list[LabeledSample], list[bool]]]
                    ) -> Learner:
    """One learner taught every upload's training pairs, decoded as a daemon decodes them."""
    from service.client import sample_from_arrays
    from service.codec import DecodeLimits, decode_labeled

    learner = create_learner(preset, "mcil", backbone=backbone)
    for names, data, held in uploads:
        train = [replace(decode_labeled("example", s.label, sample_from_arrays(s.image, s.audio, s.sample_rate),
                                        DecodeLimits()), label=s.label)
                 for n in names for s, h in zip(data, held) if s.label == n and not h]
        learner.learn_task(train, names)
    return learner


def fused_accuracy(learner: Learner, features: dict[str, torch.Tensor], truth: list[str]) -> float:
    assert learner.head is not None
    scores = learner.head.pair_scores(features)
    names = [c.casefold() for c in learner.classes]
    predicted: list[str] = [names[int(i)] for i in scores.argmax(dim=1).tolist()]
    right = sum(1 for p, t in zip(predicted, truth) if p == t.casefold())
    return 100.0 * right / len(truth)


def unknown_share(learner: Learner, features: dict[str, torch.Tensor]) -> float:
    """Percent of the test pairs answered ``unknown`` (judged on the ``av`` path, as the daemon does);
    after a round every test class is known, so each is a known class called unknown."""
    assert learner.head is not None
    return 100.0 * float(learner.head.unknown(learner.head.scores(features["av"], "av"), "av").double().mean())


def score_difference(room: Learner, central: Learner, features: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per path, max |room - central| / max |central| over the test pairs' scores (columns by name)."""
    assert room.head is not None and central.head is not None
    columns = [central.classes.index(c) for c in room.classes]
    out = {}
    for p, x in features.items():
        expected = central.head.scores(x, p)[:, columns].double()
        out[p] = float((room.head.scores(x, p).double() - expected).abs().max() / expected.abs().max())
    return out


def peak_memory_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(data: Path, preset: str, share: float, seed: int, workdir: Path, gate: bool = True) -> dict[str, Any]:
    from district.local import LocalDistrict
    from district.room import RoomLink
    from service._proto import mcil_pb2
    from service.client import Client
    from service.config_loader import load_config
    from service.server import create_server

    started = time.monotonic()
    train, test = read_split(data, "train"), read_split(data, "test")
    plan = room_plan(train.domains, train.class_names, share, seed)
    backbone = build_backbone(preset)
    probe = create_learner(preset, "mcil", backbone=backbone)
    test_batch = probe.encode_inputs(test.samples)
    features = {p: x for p, (_, x) in probe.head_inputs(test_batch).items()}
    truth = [s.label for s in test.samples]
    servers, clients, links, all_uploads, report = {}, {}, {}, [], {}
    district = LocalDistrict(workdir / "district")
    try:
        for room, tasks in plan.items():
            token = workdir / room / "token"
            token.parent.mkdir(parents=True)
            token.write_text(f"district-benchmark-{room}\n")
            config = load_config(None, {"server.preset": preset, "server.listen": "127.0.0.1:0",
                                        "server.metrics_listen": "127.0.0.1:0", "server.compiled": "false",
                                        "server.state_dir": str(workdir / room / "state"),
                                        "security.token_file": str(token),
                                        **({} if gate else {"gate.max_forgetting": "null"})})
            servers[room], port = create_server(config, backbone=backbone)
            clients[room] = Client(f"127.0.0.1:{port}", token=token.read_text().strip(), timeout=600)
            links[room] = RoomLink(room, f"127.0.0.1:{port}", token_file=token, install_timeout=600)
            uploads = uploads_of(train.samples, train.domains, room, tasks)
            all_uploads += uploads
            for names, examples_, held in uploads:
                from service.client import sample_from_arrays

                messages = [mcil_pb2.LabeledExample(label=s.label, held_out=h, sample=sample_from_arrays(
                    s.image, s.audio, s.sample_rate)) for s, h in zip(examples_, held)]
                job = clients[room].wait(clients[room].learn(names, messages).job_id, timeout=3600)
                if job.state != mcil_pb2.JOB_STATE_SUCCEEDED:
                    raise RuntimeError(f"{room}: teaching {names} ended {job.state}: {job.message}")
            learner = servers[room].daemon.served.learner
            report[room] = {"classes": [n for t in tasks for n in t], "train_pairs": sum(
                sum(not h for h in held) for _, _, held in uploads), "before": fused_accuracy(learner, features, truth)}
            print(f"{room}: taught {report[room]['classes']} ({report[room]['train_pairs']} pairs), "
                  f"before {report[room]['before']:.1f}%", flush=True)
        identity = clients[next(iter(plan))].room_statistics()[0].identity
        district.start(links)
        round_started = time.monotonic()
        result = district.round(identity, rooms=len(plan), timeout=600)
        round_wall = time.monotonic() - round_started
        superlink_peak = peak_memory_mib(district.superlink.pid) if district.superlink else 0.0
        central = central_learner(preset, backbone, all_uploads)
        central_accuracy = fused_accuracy(central, features, truth)
        central_unknown = unknown_share(central, features)
        for room in plan:
            learner = servers[room].daemon.served.learner
            entry = result["rooms"].get(room, {})
            report[room].update({
                "after": fused_accuracy(learner, features, truth), "bytes_sent": entry.get("bytes_sent"),
                "unknown_after": unknown_share(learner, features),
                "bytes_received": entry.get("bytes_received"), "install": entry.get("install", {}).get("state"),
                "share_seconds": entry.get("share_seconds"), "install_seconds": entry.get("install", {}).get("seconds"),
                "install_job_seconds": entry.get("install", {}).get("job_seconds"),
                "score_difference_to_central": score_difference(learner, central, features)})
            print(f"{room}: after {report[room]['after']:.1f}% (central {central_accuracy:.1f}%), sent "
                  f"{entry.get('bytes_sent', 0):,} B, received {entry.get('bytes_received', 0):,} B, "
                  f"{report[room]['install']}, max score difference {report[room]['score_difference_to_central']}",
                  flush=True)
    finally:
        district.stop()
        for room in servers:
            clients[room].close()
            servers[room].stop(2.0)
    return {"data": str(data), "preset": preset, "seed": seed, "share": share, "rooms": report,
            "central_accuracy": central_accuracy, "central_unknown": central_unknown, "round_seconds": result["seconds"], "round_wall_seconds": round_wall,
            "share_seconds": result["share_seconds"], "install_seconds": result["install_seconds"],
            "superlink_peak_mib": superlink_peak, "refused": result["refused"], "errors": result["errors"],
            "test_pairs": len(truth), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
            "benchmark_seconds": time.monotonic() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--preset", default="lite")
    parser.add_argument("--share", type=float, default=0.6, help="share of the classes each room teaches")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="PyTorch threads of this process, whose rooms all learn and install at once (default 1: "
                             "five rooms' solves on two cores with two threads each slow each other down many times)")
    parser.add_argument("--no-gate", action="store_true", help="turn the commit gate off (a smoke run on `tiny`)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="mcil-district-bench-") as tmp:
        out = run(args.data, args.preset, args.share, args.seed, Path(tmp), gate=not args.no_gate)
    text = json.dumps(out, indent=2, sort_keys=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
