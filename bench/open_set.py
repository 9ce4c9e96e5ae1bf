"""How often the learner answers ``unknown``: for classes it was taught, and for classes it never saw.

    python -m bench.open_set --data ../shared/data/avmnist --preset lite --strategy mcil --seed 0

Splits ``train.csv`` 90/10 per class (``test.csv`` is never read), takes the class order of T = 5
for ``--seed``, teaches the first four tasks (eight digits, two at a time) and keeps the last task's
two digits untaught. Then it scores the validation pairs of every digit on each modality path and
reports the share flagged ``unknown``: among the taught digits (the price: ideally about the head's
``unknown_quantile``) and among the untaught ones (the point: ideally all). A JSON report goes to
``--out`` if given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.run import (
    QUICK_TRAIN_PER_CLASS,
    add_run_arguments,
    class_order,
    run_arguments_invalid,
    validation_split,
)
from model.data import read_split
from model.learner import create_learner
from model.protocol import restrict
from model.samples import PATHS


def unknown_shares(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train = read_split(args.data, "train", QUICK_TRAIN_PER_CLASS if args.quick else None)
    order = class_order(train.class_names, 5, args.seed)
    taught, untaught = order[:-1], order[-1]
    fit, held_out = validation_split(train.samples, 0.1, args.seed)
    learner = create_learner(args.preset, args.strategy)
    started = time.perf_counter()
    for names in taught:
        learner.learn_task([s for s in fit if s.label in names], names)
    learn_seconds = time.perf_counter() - started
    shares: dict[str, dict[str, float]] = {}
    for group, names in (("taught", [c for t in taught for c in t]), ("untaught", untaught)):
        samples = [s.only("av") for s in held_out if s.label in names]
        batch = learner.encode_inputs(samples)
        shares[group] = {}
        for path in PATHS:
            out = learner.infer(restrict(batch, path))
            flagged = out.unknown if out.unknown is not None else torch.zeros(len(samples), dtype=torch.bool)
            shares[group][path] = round(100.0 * float(flagged.float().mean()), 1)
    return {"preset": args.preset, "strategy": args.strategy, "seed": args.seed, "taught": taught,
            "untaught": untaught, "unknown_percent": shares, "head": learner.config.head.__dict__,
            "learn_seconds": round(learn_seconds, 1), "evaluated_on": "validation (10% of train.csv)"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.open_set", description=__doc__.split("\n\n")[0])
    add_run_arguments(p)
    p.add_argument("--out", type=Path, help="where to write the JSON report")
    args = p.parse_args(argv)
    if run_arguments_invalid(args):
        return 2
    report = unknown_shares(args)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text)
    print(json.dumps(report["unknown_percent"]), file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
