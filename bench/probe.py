"""Where does an old task's accuracy go when a new task is learned? A two-task forgetting probe.

    python -m bench.probe --data ../shared/data/avmnist --preset lite --strategy mcil --threads 2

Learns the first two tasks of the benchmark's class order (``--tasks`` tasks, 5 by default;
``--seed``) from 90% of ``train.csv`` and scores the held-out 10% (never ``test.csv``: this is a
tuning tool). For each modality path it prints:

- ``old_after_t1`` / ``old_after_t2``: task-1 accuracy over every class seen so far, before and
  after task 2 (the drop is the forgetting);
- ``old_within_old``: task-1 accuracy after task 2 counting only task-1 classes. If this stays high
  while ``old_after_t2`` falls, old inputs are still told apart but the new classes' prototypes win
  them: the classifier forgets, not the features;
- ``new_after_t2``: task-2 accuracy;
- ``old_feature_cosine``: mean cosine between an old input's fused feature before and after task 2
  (1.0: the features did not move);
- ``old_visual_new_experts_off``: task-1 accuracy on the visual path after task 2 with task 2's image
  experts switched off. Above ``old_after_t2`` on ``visual``, the new experts harm old inputs: the
  router sends old inputs to them.

``--replayed-features 0`` switches off feature replay (model/replay.py), to see what it does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, cast

import torch
from torch import nn
from torch.nn import functional as F

from bench.run import (
    QUICK_EPOCHS,
    QUICK_TRAIN_PER_CLASS,
    add_run_arguments,
    class_order,
    run_arguments_invalid,
    validation_split,
)
from model.data import read_class_names, read_split
from model.device import resolve_device
from model.fusion import FusionConfig
from model.learner import Learner, create_learner
from model.learner_config import LearnerConfig
from model.protocol import restrict
from model.samples import PATHS, LabeledSample
from model.training import TrainingConfig


def mute_image_experts(learner: Learner, task_keys: Iterable[str]) -> Learner:
    """A copy of ``learner`` whose image routers never pick the experts of ``task_keys``."""
    muted = learner.clone()
    keys = set(task_keys)
    for adapter in muted.backbone.image.mixtures:
        for key, head in adapter.router.heads.items():
            if key in keys:
                with torch.no_grad():
                    cast(nn.Linear, head).bias.fill_(-1e4)
    return muted


@dataclass
class ProbeSetup:
    """What a probe starts from: the class order, the samples to learn and to score, and an
    untrained learner."""

    order: list[list[str]]
    train: list[LabeledSample]
    held_out: list[LabeledSample]
    learner: Learner


def prepare(args: argparse.Namespace, tasks: int,
            replayed_features: int = LearnerConfig().replayed_features) -> ProbeSetup:
    """Sets threads and seed, reads ``train.csv`` and splits it 90/10 per class (``test.csv`` is never
    read), orders the classes into ``tasks`` tasks as the benchmark does, and builds the learner.
    Raises ValueError when the classes cannot be split into ``tasks`` tasks."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train = read_split(args.data, "train", QUICK_TRAIN_PER_CLASS if args.quick else None)
    order = class_order(train.class_names, tasks, args.seed)
    train_samples, held_out = validation_split(train.samples, 0.1, args.seed)
    epochs = QUICK_EPOCHS if args.quick else args.epochs
    config = LearnerConfig(training=TrainingConfig(epochs=epochs, min_steps=0 if args.quick else args.min_steps,
                                                          seed=args.seed),
                           fusion=FusionConfig(threshold=args.fusion_threshold),
                           replayed_features=replayed_features, replay_weighting=args.replay_weighting)
    device = resolve_device(args.device, "--device")
    return ProbeSetup(order, train_samples, held_out,
                      create_learner(args.preset, args.strategy, config=config, device=device))


def tasks_problem(args: argparse.Namespace, why_two: str) -> str | None:
    """What is wrong with ``--tasks`` (at least 2, for ``why_two``; at most the classes in
    ``train.csv``), naming the option; ``None`` when nothing is. Reads only the class names, so a
    count that cannot be split is refused before any audio is read or any learner built."""
    classes = len(read_class_names(args.data))
    if not 2 <= args.tasks <= classes:
        return (f"--tasks: must be between 2 ({why_two}) and {classes} (the classes in "
                f"{args.data / 'train.csv'}), got {args.tasks}")
    return None


def tasks_refused(args: argparse.Namespace, why_two: str) -> bool:
    """Print what is wrong with ``--tasks`` (see :func:`tasks_problem`) and say whether it was refused."""
    problem = tasks_problem(args, why_two)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
    return problem is not None


def emit(report: dict[str, Any], out: Path | None, text: str | None = None) -> None:
    """Print ``text`` (the report as JSON unless given) and write the report as JSON to ``out``."""
    as_json = json.dumps(report, indent=2)
    print(as_json if text is None else text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(as_json)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=-1) == labels).float().mean())


def probe(args: argparse.Namespace, setup: ProbeSetup) -> dict[str, Any]:
    first, second = setup.order[:2]
    train_samples, held_out, learner = setup.train, setup.held_out, setup.learner
    learner.learn_task([s for s in train_samples if s.label in first], first)
    after_first = learner.clone()
    learner.learn_task([s for s in train_samples if s.label in second], second)

    names = first + second
    old = [s for s in held_out if s.label in first]
    new = [s for s in held_out if s.label in second]
    old_batch = learner.encode_inputs(old, labels=[names.index(s.label) for s in old])
    new_batch = learner.encode_inputs(new, labels=[names.index(s.label) for s in new])
    report: dict[str, Any] = {"tasks": len(setup.order), "classes": [first, second],
                              "held_out": [len(old), len(new)], "training": dataclasses.asdict(learner.config.training),
                              "replayed_features": args.replayed_features,
                              "fusion_threshold": args.fusion_threshold,
                              "replay_weighting": args.replay_weighting, "paths": {}}
    for path in PATHS:
        before = after_first.infer(restrict(old_batch, path))
        after = learner.infer(restrict(old_batch, path))
        cosine = F.cosine_similarity(before.fused, after.fused, dim=-1).mean()
        report["paths"][path] = {
            "old_after_t1": accuracy(before.logits, old_batch.labels),
            "old_after_t2": accuracy(after.logits, old_batch.labels),
            "old_within_old": accuracy(after.logits[:, :len(first)], old_batch.labels),
            "new_after_t2": accuracy(learner.infer(restrict(new_batch, path)).logits, new_batch.labels),
            "old_feature_cosine": float(cosine),
        }
    masked = mute_image_experts(learner, [learner.task_keys[-1]]).infer(restrict(old_batch, "visual"))
    report["old_visual_new_experts_off"] = accuracy(masked.logits, old_batch.labels)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.probe", description=__doc__.split("\n\n")[0])
    add_run_arguments(p)
    p.add_argument("--replayed-features", type=int, default=LearnerConfig().replayed_features)
    p.add_argument("--tasks", type=int, default=5,
                   help="split the classes into this many tasks, as the benchmark does; the probe learns the first two")
    p.add_argument("--out", type=Path, help="also write the report as JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if run_arguments_invalid(args):
        return 2
    if args.replayed_features < 0:
        print(f"error: --replayed-features: must be >= 0, got {args.replayed_features}", file=sys.stderr)
        return 2
    if tasks_refused(args, "the probe learns two tasks"):
        return 2
    emit(probe(args, prepare(args, args.tasks, args.replayed_features)), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
