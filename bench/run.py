"""The class-incremental benchmark: one strategy, one preset, one class order, one JSON report.

    python -m bench --data ../shared/data/avmnist --preset tiny --strategy mcil \\
        --tasks 5 --seed 0 --quick --out results.json

Protocol (docs/metrics.md): the classes of ``train.csv`` are put in a seeded random order and split
into ``--tasks`` tasks; the learner learns them one after another from ``train.csv`` and, after
each, is scored on ``test.csv`` samples of every task so far, over every class so far, on each
modality path. The report holds the class order, every matrix, every figure, wall time and peak
memory per task, and the trainable parameter counts.

``--quick`` caps samples (24 training and 10 test pairs per class) and epochs (3, with no minimum
number of steps) for a smoke run.
``--validation`` scores on a part of ``train.csv`` instead of ``test.csv``: the rows of its last
domain (``speaker`` column, sorted: ``yweweler`` on AV-MNIST, ``fold3`` on ESC-CIFAR, where a clip
repeats across rows and a row split would score clips heard in training), or 10% of each class
(seeded) when the data has fewer than two domains. Use it for every tuning decision, so
``test.csv`` stays untouched until the reported run.
``--ablation`` switches off one part of ``mcil`` (text diversity, AAVFM, or the MCIL loss).
``--device`` says where the learner trains and is scored (default ``auto``: the GPU where PyTorch
sees one, else the CPU); the report records it, and the peak GPU memory per task on a GPU.

``--scenario domain`` runs the domain-incremental protocol instead: one task per speaker (the
``speaker`` column; a seeded order of the speakers), all classes in every task; after each task the
learner is scored on the test pairs of every speaker so far. ``--tasks`` does not apply.
``--rehearsal`` turns on ``cign``'s buffer (the version then stores training pairs).

``python -m bench --suite avmnist`` runs the whole benchmark table instead (bench/suite.py).
``python -m bench.run`` is the same command (``bench/__main__.py`` calls :func:`main`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.backbone import WeightFiles
from model.data import read_class_names, read_split, read_split_domains
from model.device import describe_device, resolve_device
from model.errors import InvalidInputError
from model.fusion import FusionConfig
from model.learner import create_learner
from model.learner_config import REPLAY_WEIGHTINGS, LearnerConfig
from model.protocol import ContinualEvaluation
from model.samples import LabeledSample
from model.training import TrainingConfig

QUICK_TRAIN_PER_CLASS = 24
QUICK_TEST_PER_CLASS = 10
QUICK_EPOCHS = 3


def class_order(class_names: list[str], tasks: int, seed: int) -> list[list[str]]:
    """A seeded permutation of the classes, split into ``tasks`` nearly equal, contiguous tasks."""
    if not 1 <= tasks <= len(class_names):
        raise ValueError(f"tasks: must be between 1 and {len(class_names)}, got {tasks}")
    order = [class_names[i] for i in np.random.default_rng(seed).permutation(len(class_names))]
    return [list(chunk) for chunk in np.array_split(np.array(order, dtype=object), tasks)]


ABLATIONS = ("none", "no-text-diversity", "no-aavfm", "no-loss", "frozen-features", "adapted-features",
             "both-features")


def ablate(config: LearnerConfig, ablation: str) -> LearnerConfig:
    """``mcil`` without one of its parts (the paper's ablation rows), or with its head reading other
    features: the frozen encoders' alone (no adaptation reaches the head), the adapted ones alone (the
    first task trains the paper's parts, APER's "adapt once"), or frozen and adapted side by
    side (APER's concatenation)."""
    if ablation in ("frozen-features", "adapted-features", "both-features"):
        return replace(config, head=replace(config.head, features=ablation.removesuffix("-features")))
    if ablation == "no-text-diversity":
        return replace(config, text_diversity=False)
    if ablation == "no-aavfm":
        return replace(config, fusion=replace(config.fusion, kind="concat"))
    if ablation == "no-loss":
        return replace(config, loss=replace(config.loss, kind="cross_entropy"))
    return config


def domain_order(domains: list[str], seed: int) -> list[str]:
    """A seeded permutation of the distinct domains (speakers) in ``domains``."""
    names = sorted(set(domains))
    return [names[i] for i in np.random.default_rng(seed).permutation(len(names))]


def validation_split(samples: list[LabeledSample], fraction: float,
                     seed: int) -> tuple[list[LabeledSample], list[LabeledSample]]:
    """(train, validation): ``fraction`` of each class, chosen with ``seed``, becomes validation."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_class.setdefault(s.label, []).append(i)
    held = set()
    for rows in by_class.values():
        held.update(rng.choice(rows, size=max(1, int(round(len(rows) * fraction))), replace=False).tolist())
    return [s for i, s in enumerate(samples) if i not in held], [s for i, s in enumerate(samples) if i in held]


def held_out_domain(samples: list[LabeledSample], domains: list[str], seed: int
                    ) -> tuple[list[LabeledSample], list[LabeledSample], str]:
    """(train, validation, what validation is): the last domain in sorted order is held out whole, or,
    with fewer than two domains, 10% of each class (:func:`validation_split`)."""
    names = sorted(set(domains))
    if len(names) < 2:
        train, held = validation_split(samples, 0.1, seed)
        return train, held, "validation (10% of train.csv)"
    last = names[-1]
    return ([s for s, d in zip(samples, domains) if d != last], [s for s, d in zip(samples, domains) if d == last],
            f"validation (train.csv, speaker {last})")


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_gpu_mib(device: torch.device) -> float | None:
    """Peak GPU memory PyTorch has allocated since its peak was last reset; ``None`` on the CPU."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_cap = QUICK_TRAIN_PER_CLASS if args.quick else None
    test_cap = QUICK_TEST_PER_CLASS if args.quick else None
    train = read_split(args.data, "train", train_cap)
    domain = getattr(args, "scenario", "class") == "domain"
    # Per task: (its name in the record, its training examples, its held-out samples).
    plan: list[tuple[list[str], list[LabeledSample], list[LabeledSample]]] = []
    evaluated_on = "validation (10% of train.csv)" if args.validation else "test.csv"
    if domain:
        test = None if args.validation else read_split(args.data, "test", test_cap)
        tasks = [[f"speaker {d}"] for d in domain_order(train.domains, args.seed)]
        for (name,) in tasks:
            speaker = name.removeprefix("speaker ")
            mine = [x for x, d in zip(train.samples, train.domains) if d == speaker]
            if test is None:
                plan.append(([name], *validation_split(mine, 0.1, args.seed)))
            else:
                plan.append(([name], mine, [x for x, d in zip(test.samples, test.domains) if d == speaker]))
    else:
        tasks = class_order(train.class_names, args.tasks, args.seed)
        if args.validation:
            train_samples, test_samples, evaluated_on = held_out_domain(train.samples, train.domains, args.seed)
        else:
            train_samples, test_samples = train.samples, read_split(args.data, "test", test_cap).samples
        plan = [(names, [x for x in train_samples if x.label in names], [x for x in test_samples if x.label in names])
                for names in tasks]

    training = TrainingConfig(epochs=QUICK_EPOCHS if args.quick else args.epochs,
                              min_steps=0 if args.quick else args.min_steps, batch_size=args.batch_size,
                              learning_rate=args.lr, seed=args.seed)
    config = ablate(LearnerConfig(training=training, fusion=FusionConfig(threshold=args.fusion_threshold),
                                  replay_weighting=args.replay_weighting,
                                  rehearsal=getattr(args, "rehearsal", False)), args.ablation)
    weights = WeightFiles(clip=args.clip_weights, audioclip=args.audioclip_weights,
                          audio_projection=args.audio_projection)
    device = resolve_device(args.device, "--device")
    started = time.perf_counter()
    learner = create_learner(args.preset, args.strategy, config=config, weights=weights, device=device)
    build_seconds = time.perf_counter() - started
    evaluation = ContinualEvaluation(baseline=learner.clone(), seed=args.seed)

    per_task: list[dict[str, Any]] = []
    held_out_by_task = []
    for t, (names, examples, held_out) in enumerate(plan, start=1):
        classes = sorted({x.label for x in examples}, key=train.class_names.index) if domain else names
        held_out_by_task.append(held_out)
        evaluation.before_task(learner, [c for c in classes if c not in learner.classes], held_out)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)  # each task's own peak
        tick = time.perf_counter()
        report = learner.learn_task(examples, classes)
        train_seconds = time.perf_counter() - tick
        evaluation.after_task(learner, held_out_by_task, examples, names)
        eval_seconds = time.perf_counter() - tick - train_seconds
        summary = evaluation.record.summary()
        per_task.append({
            "task": t, "classes": names, "train_examples": len(examples), "held_out": len(held_out),
            "train_seconds": round(train_seconds, 3), "eval_seconds": round(eval_seconds, 3),
            "steps": report.steps, "final_loss": report.final_loss,
            "trainable_parameters": report.trainable_parameters, "peak_rss_mib": round(peak_rss_mib(), 1),
            "peak_gpu_mib": peak_gpu_mib(device),
            "accuracy_all_seen": {p: f["incremental_accuracy"][-1] for p, f in summary.items()},
            "fused_share": evaluation.fused_share[-1] if evaluation.fused_share else None,
        })
        if not args.no_progress:
            acc = " ".join(f"{p}={v:.1f}" for p, v in per_task[-1]["accuracy_all_seen"].items())
            print(f"task {t}/{len(tasks)} {names}: {train_seconds:.1f}s train, accuracy {acc}", file=sys.stderr)

    return {
        "preset": args.preset, "strategy": args.strategy, "tasks": len(tasks), "seed": args.seed,
        "scenario": "domain" if domain else "class", "rehearsal": config.rehearsal,
        "ablation": args.ablation, "quick": args.quick, "data": str(args.data),
        "evaluated_on": evaluated_on,
        "class_order": tasks,
        "held_out_per_task": [len(h) for h in held_out_by_task],
        "learner_config": learner.config.to_dict(),  # in effect: concat strategies say so
        "backbone_config": dataclasses.asdict(learner.backbone.config),
        "figures": evaluation.record.summary(),
        "record": evaluation.record.to_dict(),
        "per_task": per_task,
        "parameters": learner.parameter_counts(),
        "build_seconds": round(build_seconds, 3),
        "total_seconds": round(time.perf_counter() - started, 3),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "peak_gpu_mib": max((t["peak_gpu_mib"] for t in per_task), default=None) if device.type == "cuda" else None,
        "machine": {"cpus": os.cpu_count(), "threads": torch.get_num_threads(), "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "device": describe_device(device)},
    }


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The options every AV-MNIST command shares (benchmark, probes): data, preset, strategy, seed,
    training budget, quick mode, threads, device, AAVFM's threshold and how replay is weighted."""
    from model.backbone import preset_names
    from model.strategies import STRATEGIES

    p.add_argument("--data", type=Path, default=Path("../shared/data/avmnist"), help="folder laid out like AV-MNIST")
    p.add_argument("--preset", default="lite", choices=preset_names())
    p.add_argument("--strategy", default="mcil", choices=sorted(STRATEGIES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=TrainingConfig().epochs)
    p.add_argument("--min-steps", type=int, default=TrainingConfig().min_steps,
                   help="a task small enough to get fewer optimizer steps than this in --epochs trains "
                        "for more whole epochs (0: exactly --epochs)")
    p.add_argument("--quick", action="store_true", help="cap samples and epochs for a smoke run (no --min-steps)")
    p.add_argument("--threads", type=int, help="PyTorch CPU threads (default: PyTorch's own choice)")
    p.add_argument("--device", default="auto",
                   help="auto (a CUDA GPU where PyTorch sees one, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--fusion-threshold", type=float, default=FusionConfig().threshold,
                   help="AAVFM's Pearson threshold th: pairs with r >= th take the fusion branch (mcil)")
    p.add_argument("--replay-weighting", choices=REPLAY_WEIGHTINGS, default=LearnerConfig().replay_weighting,
                   help="mcil, moe-adapters: weigh the new examples' and the replayed features' losses by "
                        "the classes each stands for (per-class), or alike (equal)")


def run_arguments_invalid(args: argparse.Namespace) -> bool:
    """True (after naming the option and the problem on stderr) when an option of
    :func:`add_run_arguments` cannot be used: no ``train.csv`` under ``--data``, a training budget
    below its minimum, a thread count below 1, or a device this machine does not have."""
    problem = None
    if not (args.data / "train.csv").exists():
        problem = f"--data {args.data}: no train.csv there"
    elif args.epochs < 1:
        problem = f"--epochs: must be >= 1, got {args.epochs}"
    elif args.min_steps < 0:
        problem = f"--min-steps: must be >= 0, got {args.min_steps}"
    elif args.threads is not None and args.threads < 1:
        problem = f"--threads: must be >= 1, got {args.threads}"
    else:
        try:
            resolve_device(args.device, "--device")
        except InvalidInputError as exc:
            problem = str(exc)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
    return problem is not None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    add_run_arguments(p)
    p.add_argument("--suite", choices=["avmnist", "esc-cifar"],
                   help="run a whole benchmark table (see bench/suite.py)")
    p.add_argument("--rows", choices=["all", "fast", "papers"], default="all",
                   help="suite: every strategy, only those that train at most once (minutes per run), or "
                        "cign and mmcl at T = 5 and 10")
    p.add_argument("--tasks", type=int, default=5)
    p.add_argument("--scenario", choices=["class", "domain"], default="class",
                   help="class-incremental (new classes per task) or domain-incremental (one speaker per "
                        "task, every class in each)")
    p.add_argument("--rehearsal", action="store_true",
                   help="cign: keep and replay exemplars_per_class training pairs per class (stores data)")
    p.add_argument("--batch-size", type=int, default=TrainingConfig().batch_size)
    p.add_argument("--lr", type=float, default=TrainingConfig().learning_rate)
    p.add_argument("--validation", action="store_true", help="score on train.csv's last speaker (or 10%% of it), not test.csv")
    p.add_argument("--ablation", choices=ABLATIONS, default="none", help="mcil without one of its parts")
    p.add_argument("--clip-weights", type=Path, help="CLIP ViT-B/16 weights (audioclip preset)")
    p.add_argument("--audioclip-weights", type=Path, help="AudioCLIP checkpoint (audioclip preset)")
    p.add_argument("--audio-projection", type=Path, help="optional P, 512x1024 (audioclip preset)")
    p.add_argument("--out", type=Path, help="where to write the JSON report (suite: a folder)")
    p.add_argument("--max-runs", type=int, help="suite: run at most this many pending runs, then aggregate")
    p.add_argument("--workers", type=int, default=1,
                   help="suite: runs at once, each in its own process with cpus/workers threads (default 1)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def bench_arguments_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with this command's own options (those :func:`parse_args` adds beside
    :func:`add_run_arguments`), naming the option; ``None`` when nothing is. Reads only
    ``train.csv`` (for the number of classes), after :func:`run_arguments_invalid` found it."""
    if args.rehearsal and args.strategy != "cign" and not args.suite:
        return f"--rehearsal: only cign has a rehearsal buffer, not {args.strategy}"
    if args.scenario == "domain" and len(set(read_split_domains(args.data))) < 2:
        return f"--scenario domain: {args.data / 'train.csv'} needs a speaker column with at least two speakers"
    if not args.suite and args.scenario == "class":  # the suite sets the number of tasks of each of its runs
        classes = len(read_class_names(args.data))
        if not 1 <= args.tasks <= classes:
            return (f"--tasks: must be between 1 and {classes} (the classes in {args.data / 'train.csv'}), "
                    f"got {args.tasks}")
    if args.batch_size < 1:
        return f"--batch-size: must be >= 1, got {args.batch_size}"
    if not args.lr > 0:
        return f"--lr: must be > 0, got {args.lr}"
    if args.max_runs is not None and (not args.suite or args.max_runs < 0):
        return "--max-runs: a number >= 0, and only with --suite"
    if args.workers < 1 or (args.workers > 1 and not args.suite):
        return "--workers: a number >= 1, and more than 1 only with --suite"
    if not args.suite and args.out is None:
        return "--out: required (where to write the JSON report)"
    if not args.suite and args.out.is_dir():
        return f"--out: {args.out} is a folder; name the JSON file to write (a folder is for --suite)"
    if args.suite and args.out is not None and args.out.exists() and not args.out.is_dir():
        return f"--out: {args.out} is a file; --suite writes its reports into a folder"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if run_arguments_invalid(args):
        return 2
    problem = bench_arguments_problem(args)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.suite:
        from bench.suite import run_suite

        return run_suite(args, run)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    av = result["figures"].get("av", {})
    print(json.dumps({k: av.get(k) for k in ("average_accuracy", "last_accuracy", "forgetting", "bwt", "fwt",
                                               "m1", "m2")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
