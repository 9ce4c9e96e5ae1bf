"""Per-task experts with frozen routes (EASE's shape) against adapting once: option (b) of the design.

    python -m bench.ease_probe --data ../shared/data/avmnist --preset lite --seed 0 --threads 1 --out r.json

Learns the benchmark's ``--tasks`` tasks (class order of ``--seed``) from 90% of ``train.csv`` and
scores the other 10% (never ``test.csv``: this is a tuning tool). Every task trains its own image and
text experts with the MCIL loss, old experts frozen (``mcil-paper``'s experts, without feature
replay); the lite projections and AAVFM train on the first task only, then freeze, so the first
task's features are exactly what ``mcil`` reads. After each task, ridge heads (model/heads.py,
lambda by generalised cross-validation) are fitted on **every training example seen so far**, which
this probe keeps in memory (the product does not): the best an exact head over these features can
do, whatever way it would be kept up to date without the data (EASE's prototype complement):

    (a) the first task's branch only: ``v_1``, ``a``, ``fused_1``: what ``mcil`` reads
    (b) every task's branch: ``v_1 .. v_t`` (the image tower with only task k's experts routed),
        ``a``, ``fused_1 .. fused_t``

Per modality path it reports each head's accuracy matrix on the held-out split (a row per task:
accuracy on every task so far, over all classes so far), the pooled accuracy after each task, and
average, last and forgetting (docs/metrics.md). If (b) does not beat (a) here, its extra training
per task (minutes on a CPU, against seconds) buys nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from bench.probe import emit, mute_image_experts, prepare, tasks_refused
from model.batch import EncodedBatch
from model.heads import HeadConfig, StatisticsHead, unit_features
from model.learner import Learner
from model.metrics import average_accuracy, forgetting, last_accuracy, pooled_accuracy
from model.samples import PATHS, LabeledSample

PARTS = {"visual": ("v",), "audio": ("a",), "av": ("v", "a", "fused")}


def branch_features(learner: Learner, batch: EncodedBatch, keep: str) -> dict[str, torch.Tensor]:
    """``v``, ``a``, ``fused`` of ``batch`` with only the image experts of task ``keep`` routed."""
    muted = mute_image_experts(learner, [k for k in learner.task_keys if k != keep])
    parts: dict[str, list[torch.Tensor]] = {"v": [], "a": [], "fused": []}
    with torch.no_grad():
        for chunk in batch.chunks():
            out = muted.forward(chunk, muted.prototypes, scores=False)
            parts["v"].append(out.visual.cpu())
            parts["a"].append(out.audio.cpu())
            parts["fused"].append(out.fused.cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


def head_features(branches: Sequence[dict[str, torch.Tensor]], path: str) -> torch.Tensor:
    """Unit parts joined: each branch's ``v`` (and ``fused``) for the parts of ``path``, ``a`` once."""
    chosen = []
    for part in PARTS[path]:
        chosen += [branches[0][part]] if part == "a" else [b[part] for b in branches]
    return unit_features(chosen)


def fit_and_score(train: torch.Tensor, train_y: torch.Tensor, test: torch.Tensor, classes: int,
                  path: str) -> torch.Tensor:
    """Predicted class rows of ``test`` by a ridge head fitted once on ``train``."""
    head = StatisticsHead("analytic", HeadConfig(kind="analytic"), {path: train.shape[1]})
    head.learn({path: train}, {path: train_y}, classes)
    return head.scores(test, path).argmax(dim=-1)


def probe(args: argparse.Namespace) -> dict[str, Any]:
    setup = prepare(args, args.tasks, replayed_features=0)
    order, learner = setup.order, setup.learner
    names = [c for task in order for c in task]
    train: list[LabeledSample] = [s for s in setup.train if s.label in names]
    held: list[LabeledSample] = [s for s in setup.held_out if s.label in names]
    train_batch = learner.encode_inputs(train, labels=[names.index(s.label) for s in train])
    held_batch = learner.encode_inputs(held, labels=[names.index(s.label) for s in held])
    task_of = torch.tensor([next(i for i, t in enumerate(order) if n in t) for n in names])
    rows: dict[str, dict[str, list[list[float]]]] = {h: {p: [] for p in PATHS} for h in ("a", "b")}
    pooled: dict[str, dict[str, list[float]]] = {h: {p: [] for p in PATHS} for h in ("a", "b")}
    seconds = []
    branches_train: list[dict[str, torch.Tensor]] = []
    branches_held: list[dict[str, torch.Tensor]] = []
    for t, classes in enumerate(order):
        started = time.perf_counter()
        learner.learn_task([s for s in train if s.label in classes], classes)
        if t == 0:
            learner.fusion.requires_grad_(False)  # AAVFM adapts once, like the projections
        seconds.append(time.perf_counter() - started)
        key = learner.task_keys[-1]
        branches_train.append(branch_features(learner, train_batch, key))
        branches_held.append(branch_features(learner, held_batch, key))
        seen = len([c for task in order[: t + 1] for c in task])
        tr = (train_batch.labels < seen).nonzero().flatten()
        te = (held_batch.labels < seen).nonzero().flatten()
        y_test = held_batch.labels[te].cpu()
        for head, branches in (("a", branches_train[:1]), ("b", branches_train)):
            held_branches = branches_held[:1] if head == "a" else branches_held
            for path in PATHS:
                predicted = fit_and_score(head_features(branches, path)[tr], train_batch.labels[tr].cpu(),
                                          head_features(held_branches, path)[te], seen, path)
                correct = (predicted == y_test).float()
                tasks = task_of[y_test]
                row = [100.0 * float(correct[tasks == j].mean()) for j in range(t + 1)]
                counts = [int((tasks == j).sum()) for j in range(t + 1)]
                rows[head][path].append(row)
                pooled[head][path].append(pooled_accuracy(row, counts))
        print(f"task {t + 1}/{len(order)}: trained {seconds[-1]:.0f} s; av last (a) "
              f"{pooled['a']['av'][-1]:.1f}  (b) {pooled['b']['av'][-1]:.1f}", file=sys.stderr, flush=True)
    figures = {head: {path: {"average_accuracy": average_accuracy(pooled[head][path]),
                             "last_accuracy": last_accuracy(pooled[head][path]),
                             "forgetting": forgetting(rows[head][path])} for path in PATHS} for head in ("a", "b")}
    return {"tasks": len(order), "seed": args.seed, "class_order": order, "held_out": len(held),
            "train_seconds_per_task": seconds, "figures": figures, "accuracy_matrices": rows, "pooled": pooled}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from bench.run import add_run_arguments

    p = argparse.ArgumentParser(prog="python -m bench.ease_probe", description=__doc__.split("\n\n")[0])
    add_run_arguments(p)
    p.add_argument("--tasks", type=int, default=5, help="split the classes into this many tasks, as the benchmark does")
    p.add_argument("--out", type=Path, help="also write the report as JSON here")
    args = p.parse_args(argv)
    args.strategy = "mcil-paper"  # per-task experts with the MCIL loss; the heads are this probe's own
    return args


def main(argv: list[str] | None = None) -> int:
    from bench.run import run_arguments_invalid

    args = parse_args(argv)
    if run_arguments_invalid(args):
        return 2
    if tasks_refused(args, "per-task experts need a second task"):
        return 2
    emit(probe(args), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
