"""Does the router send an old task's images to that task's experts? A routing probe over every task.

    python -m bench.routing_probe --data ../shared/data/avmnist --preset lite --strategy mcil --tasks 10 --threads 2

For the strategies with experts per task (``mcil``, ``moe-adapters``): learns every task of the
benchmark's class order (``--tasks``, ``--seed``) from 90% of ``train.csv`` and scores the held-out
10% of each task (never ``test.csv``: this is a tuning tool). For each task it prints:

- ``routed_to_own_task``: the share of the task's held-out images whose gate weight in the image
  encoder, summed over its blocks, is largest on the task's own experts;
- ``accuracy``: accuracy over every class learned, on the fused (``av``) and image-only (``visual``)
  paths, as the learner stands;
- ``accuracy_own_experts_only``: the same with every other task's image experts switched off, so
  each image is routed to its own task's experts (an oracle router). Well above ``accuracy``, the
  router costs the old tasks their accuracy; about equal, the loss lies elsewhere (the features or
  the classifier).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from bench.probe import ProbeSetup, accuracy, emit, mute_image_experts, prepare, tasks_refused
from bench.run import add_run_arguments, run_arguments_invalid
from model.batch import EncodedBatch
from model.learner import Learner
from model.protocol import restrict
from model.strategies import STRATEGIES
from model.strategies.moe_adapters import MoEAdapters

PROBED_PATHS = ("av", "visual")  # the sound-only path never passes the image experts


def only_task_experts(learner: Learner, task_key: str) -> Learner:
    """A copy of ``learner`` whose image routers pick only ``task_key``'s experts."""
    return mute_image_experts(learner, [key for key in learner.task_keys if key != task_key])


def routed_tasks(learner: Learner, batch: EncodedBatch) -> torch.Tensor:
    """Per image, the index of the task whose experts get the most gate weight over all blocks: ``(B,)``."""
    tower = learner.backbone.image
    keys = learner.task_keys
    mass = torch.zeros(len(batch), len(keys), device=batch.images.device)
    with torch.no_grad():
        gates = tower.routing_weights(batch.images)  # per block (B, E), experts in the order added
    for adapter, g in zip(tower.mixtures, gates):
        owners = [keys.index(name.rsplit("_", 1)[0]) for name in adapter.experts]
        for column, owner in enumerate(owners):
            mass[:, owner] += g[:, column]
    return mass.argmax(dim=-1)


def path_accuracy(learner: Learner, batch: EncodedBatch, path: str) -> float:
    return accuracy(learner.infer(restrict(batch, path)).logits, batch.labels)


def probe(args: argparse.Namespace, setup: ProbeSetup) -> dict[str, Any]:
    learner, order = setup.learner, setup.order
    for names in order:
        learner.learn_task([s for s in setup.train if s.label in names], names)

    classes = learner.classes
    report: dict[str, Any] = {"strategy": args.strategy, "tasks": args.tasks, "seed": args.seed,
                              "class_order": order, "learner_config": learner.config.to_dict(), "per_task": []}
    for index, (task_key, names) in enumerate(zip(learner.task_keys, order)):
        samples = [s for s in setup.held_out if s.label in names]
        batch = learner.encode_inputs(samples, labels=[classes.index(s.label) for s in samples])
        own = only_task_experts(learner, task_key)
        report["per_task"].append({
            "task": index + 1,
            "classes": names,
            "held_out": len(samples),
            "routed_to_own_task": float((routed_tasks(learner, batch) == index).float().mean()),
            "accuracy": {path: path_accuracy(learner, batch, path) for path in PROBED_PATHS},
            "accuracy_own_experts_only": {path: path_accuracy(own, batch, path) for path in PROBED_PATHS},
        })
    return report


def summary(report: dict[str, Any]) -> str:
    """One line per task: routing share, then accuracy as is and with its own experts only."""
    lines = ["task  routed-to-own  av: as-is / own-only  visual: as-is / own-only"]
    for t in report["per_task"]:
        acc, own = t["accuracy"], t["accuracy_own_experts_only"]
        lines.append(f"{t['task']:>4}  {t['routed_to_own_task']:>13.2f}  {acc['av']:>9.2f} / {own['av']:.2f}"
                     f"  {acc['visual']:>13.2f} / {own['visual']:.2f}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.routing_probe", description=__doc__.split("\n\n")[0])
    add_run_arguments(p)
    p.add_argument("--tasks", type=int, default=10)
    p.add_argument("--out", type=Path, help="also write the report as JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not issubclass(STRATEGIES[args.strategy], MoEAdapters):
        print(f"error: --strategy {args.strategy}: keeps one set of experts for every task, so there is "
              "no routing between tasks to probe (use mcil or moe-adapters)", file=sys.stderr)
        return 2
    if run_arguments_invalid(args):
        return 2
    if tasks_refused(args, "routing between tasks"):
        return 2
    report = probe(args, prepare(args, args.tasks))
    emit(report, args.out, summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
